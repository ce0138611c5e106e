"""Header names streamml puts on the records it writes for people to inspect (dead letters), in one place
below every layer that writes or reads them (the runtime's stages, the MQTT bridge, ``streamml dlq``)."""

H_KIND = "streamml.error.kind"
H_MESSAGE = "streamml.error.message"
H_TOPIC = "streamml.source.topic"
H_PARTITION = "streamml.source.partition"
H_OFFSET = "streamml.source.offset"
H_QUERY = "streamml.query"
H_MODEL = "streamml.model.version"
H_TRUNCATED = "streamml.error.truncated-from"

#: longest value a dead letter keeps (a dead-letter topic takes 1 MB records by default)
MAX_VALUE_BYTES = 256 * 1024
