"""The OPRF key service (RFC 9497, ristretto255-SHA512): agencies blind, it evaluates, agencies
unblind and finalize into match keys, so that no agency holds the linkage key and the service
never sees an identifier."""
