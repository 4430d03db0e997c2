package decisionfeed

// Default topic names (DESIGN.md, "Kafka topics"); every one is configurable.
const (
	TopicServerLogs  = "server-logs"
	TopicDecisions   = "crowdsec-decisions"
	TopicAlerts      = "alert-notifications"
	TopicThreatIntel = "threat-intel"
)

// Partition counts of the default topics.
const (
	PartitionsServerLogs  = 6
	PartitionsDecisions   = 3
	PartitionsAlerts      = 2
	PartitionsThreatIntel = 1
)

// DLQTopic returns the dead-letter topic for a topic: "<topic>.dlq".
func DLQTopic(topic string) string { return topic + ".dlq" }
