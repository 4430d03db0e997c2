package main

import (
	"context"
	"fmt"

	"github.com/portcullis-ips/portcullis/internal/cli"
	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// kafkaTarget is where a subcommand's Kafka clients connect, and how.
type kafkaTarget struct {
	brokers []string
	sec     *kafkaconn.Security
}

// connectKafka resolves the brokers and the TLS and SASL settings of a
// subcommand, which has no configuration file: flags over environment over
// defaults. It probes the brokers once (see cli.Common.KafkaSecurity) and
// logs what must be logged as component.
func connectKafka(ctx context.Context, common *cli.Common, component string) (kafkaTarget, error) {
	log, err := common.Logger(component)
	if err != nil {
		return kafkaTarget{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	brokers := common.BrokerList()
	sec, err := common.KafkaSecurity(ctx, kafkaconn.Config{}, brokers, log)
	if err != nil {
		return kafkaTarget{}, err
	}
	return kafkaTarget{brokers: brokers, sec: sec}, nil
}
