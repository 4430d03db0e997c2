# The seed architecture's decision consumer ("Decision Consumer — Apply Bans"),
# kept as the seed wrote it except that the iptables call is replaced by a
# printed line the Go test reads, and the loop is bounded for a test: it stops
# once it has seen every decision id given on the command line, or after
# consumer_timeout_ms without a message.
#
#   python3 seed_consumer.py BROKERS TOPIC GROUP ID...
#
# Output, one JSON object per message: {"id", "action", "ip"/"value", "duration"},
# action "ban" where the seed would run iptables -A INPUT -s IP -j DROP.
import json
import sys

from kafka import KafkaConsumer

brokers, topic, group = sys.argv[1].split(','), sys.argv[2], sys.argv[3]
want = set(sys.argv[4:])

consumer = KafkaConsumer(
    topic,
    bootstrap_servers=brokers,
    value_deserializer=lambda m: json.loads(m.decode('utf-8')),
    group_id=group,
    auto_offset_reset='earliest',
    consumer_timeout_ms=20000,
)

for message in consumer:
    decision = message.value
    if decision['type'] == 'ban':
        ip = decision['value']
        duration = decision['duration']
        # seed: subprocess.run(['iptables', '-A', 'INPUT', '-s', ip, '-j', 'DROP'])
        print(json.dumps({'id': decision['id'], 'action': 'ban', 'ip': ip, 'duration': duration}), flush=True)
    else:
        print(json.dumps({'id': decision['id'], 'action': 'skip', 'value': decision['value']}), flush=True)
    want.discard(decision['id'])
    if not want:
        break

consumer.close()
sys.exit(1 if want else 0)
