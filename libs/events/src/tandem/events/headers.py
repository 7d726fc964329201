"""Message header names. ``Nats-Msg-Id`` is JetStream's de-duplication key."""

MSG_ID = "Nats-Msg-Id"
TYPE = "Tandem-Type"
VERSION = "Tandem-Version"
EPOCH = "Tandem-Epoch"
CLUSTER = "Tandem-Cluster"
#: A command's sender: the bus user it was sent as (checked by the node, issue 17).
SENDER = "Tandem-Sender"

DLQ_REASON = "Tandem-Dlq-Reason"
DLQ_CONSUMER = "Tandem-Dlq-Consumer"
DLQ_SOURCE_STREAM = "Tandem-Dlq-Source-Stream"
DLQ_SOURCE_SEQ = "Tandem-Dlq-Source-Seq"
DLQ_SOURCE_SUBJECT = "Tandem-Dlq-Source-Subject"
DLQ_ORIGINAL_MSG_ID = "Tandem-Dlq-Original-Msg-Id"
