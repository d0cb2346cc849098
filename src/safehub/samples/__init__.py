"""Made-up sample data shared by the tests and the benchmarks: records of every contract type
and fictional children an agency might publish about. Nothing here is real or used by a
service; it lives in the package (not under tests/) because the benchmarks use it too."""
