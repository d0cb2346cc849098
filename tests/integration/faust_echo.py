"""A minimal faust-streaming app for the broker test: uppercases raw values from IN to OUT.

It connects as the environment says (safehub.connection: SASL_SSL, SCRAM-SHA-512), and, like
the correlator, may not create topics."""

import os

import faust

from safehub.connection import KafkaConnection

app = faust.App(
    os.environ["ECHO_APP_ID"],
    **KafkaConnection.from_env("correlator").faust(),
    topic_allow_declare=False,
    topic_disable_leader=True,
    value_serializer="raw",
    key_serializer="raw",
    web_enabled=False,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["ECHO_IN"], value_type=bytes, key_type=bytes)
sink = app.topic(os.environ["ECHO_OUT"], value_type=bytes, key_type=bytes)


@app.agent(source)
async def echo(stream):
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value.upper())


if __name__ == "__main__":
    app.main()
