package acquire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// Source kinds an acquis.yaml document may name with "source:". A document
// with "filenames:" and no "source:" is a file source, as in CrowdSec.
const (
	KindFile   = "file"
	KindKafka  = "kafka"
	KindSyslog = "syslog"
)

// KnownTypes are the values the "type" label may take: the log formats the
// engine's parsers read.
var KnownTypes = []string{"nginx", "apache", "apache2", "httpd", "syslog", "sshd", "auth", "journal"}

// DefaultMaxLineBytes bounds one line when a document does not say otherwise.
const DefaultMaxLineBytes = 64 << 10

// maxConfigBytes bounds an acquis.yaml file; a real one is a few hundred bytes.
const maxConfigBytes = 1 << 20

// SourceConfig is one document of an acquis.yaml file.
type SourceConfig struct {
	// Kind is KindFile, KindKafka or KindSyslog.
	Kind string
	// Labels are the document's labels; Labels["type"] is always set and is
	// one of KnownTypes.
	Labels map[string]string
	// MaxLineBytes bounds one line (or message); longer ones are counted and skipped.
	MaxLineBytes int

	// Filenames are the paths or glob patterns of a file source.
	Filenames []string
	// FromBeginning reads files present at start from their first byte
	// instead of from their end; for Kafka, a new consumer group starts at
	// the oldest message instead of the newest.
	FromBeginning bool

	// Topic, Brokers and GroupID name what a Kafka source consumes.
	Topic   string
	Brokers []string
	GroupID string
	// TLS, when set, makes a Kafka source connect over TLS.
	TLS *TLSConfig
	// SASL, when set, makes a Kafka source authenticate.
	SASL *SASLConfig

	// ListenAddr (host:port) and Protocol ("udp" or "tcp") say where a
	// syslog source listens.
	ListenAddr string
	Protocol   string

	// File and Line locate the document, for messages about it.
	File string
	Line int
}

// Type returns the "type" label: the log format of the source's lines.
func (c *SourceConfig) Type() string { return c.Labels["type"] }

// Name returns a short human name of the source, used in metrics and logs.
func (c *SourceConfig) Name() string {
	switch c.Kind {
	case KindKafka:
		return "kafka:" + c.Topic
	case KindSyslog:
		return "syslog:" + c.Protocol + ":" + c.ListenAddr
	}
	return "file:" + strings.Join(c.Filenames, ",")
}

// TLSConfig are the TLS options of a Kafka source, named as CrowdSec names them.
type TLSConfig struct {
	// CACert is a PEM file of the CAs to trust; empty means the system pool.
	CACert string
	// ClientCert and ClientKey are PEM files of a client certificate; both or neither.
	ClientCert string
	ClientKey  string
	// InsecureSkipVerify turns off server certificate verification.
	InsecureSkipVerify bool
}

// SASL mechanisms a Kafka source supports.
const (
	SASLPlain       = "plain"
	SASLSCRAMSHA256 = "scram-sha-256"
	SASLSCRAMSHA512 = "scram-sha-512"
)

// SASLConfig are the SASL options of a Kafka source.
type SASLConfig struct {
	// Mechanism is SASLPlain, SASLSCRAMSHA256 or SASLSCRAMSHA512.
	Mechanism string
	Username  string
	// Password prints as kafkaconn.Redacted, so logging a source's
	// configuration does not leak it.
	Password kafkaconn.Secret
}

// ConfigError is a problem at one place of an acquis.yaml file.
type ConfigError struct {
	File   string // the acquis.yaml file
	Line   int    // 1-based; 0 when the problem is the whole file
	Reason string // what is wrong, naming the key
}

// Error returns "FILE:LINE: reason".
func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Reason)
}

// LoadConfig reads and checks an acquis.yaml file.
func LoadConfig(path string) ([]SourceConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("acquis: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("acquis: %w", err)
	}
	if len(b) > maxConfigBytes {
		return nil, &ConfigError{File: path, Reason: fmt.Sprintf("larger than %d bytes", maxConfigBytes)}
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes the acquis.yaml documents in b; name is the file name
// used in errors. Unknown keys, wrong types and bad values are errors of
// type *ConfigError naming the line. Empty documents are skipped; a file
// without any source is an error.
func ParseConfig(name string, b []byte) ([]SourceConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []SourceConfig
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &ConfigError{File: name, Line: yamlErrLine(err), Reason: yamlErrReason(err)}
		}
		if len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
			continue
		}
		c, err := decodeSource(name, root)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, &ConfigError{File: name, Reason: "no source defined"}
	}
	return out, nil
}

// yamlErrLine digs the line out of a yaml.v3 syntax error ("yaml: line 3: ...").
func yamlErrLine(err error) int {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		rest := s[i+5:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if j > 0 {
			if n, err := strconv.Atoi(rest[:j]); err == nil {
				return n
			}
		}
	}
	return 0
}

func yamlErrReason(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, "line "); i == 0 {
		if j := strings.Index(s, ": "); j > 0 {
			s = s[j+2:]
		}
	}
	return s
}

// decoder walks one document's nodes and turns problems into ConfigErrors.
type decoder struct {
	file string
}

func (d *decoder) errf(n *yaml.Node, format string, args ...any) error {
	return &ConfigError{File: d.file, Line: n.Line, Reason: fmt.Sprintf(format, args...)}
}

// fields returns the key/value pairs of a mapping node, rejecting duplicates.
func (d *decoder) fields(n *yaml.Node, what string) ([][2]*yaml.Node, error) {
	if n.Kind == yaml.AliasNode {
		return nil, d.errf(n, "%s: aliases are not supported", what)
	}
	if n.Kind != yaml.MappingNode {
		return nil, d.errf(n, "%s: want a mapping, got %s", what, kindName(n))
	}
	seen := make(map[string]bool, len(n.Content)/2)
	out := make([][2]*yaml.Node, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, d.errf(k, "%s: keys must be plain strings", what)
		}
		if seen[k.Value] {
			return nil, d.errf(k, "%s: duplicate key %q", what, k.Value)
		}
		seen[k.Value] = true
		out = append(out, [2]*yaml.Node{k, v})
	}
	return out, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return "a scalar"
	}
	return "a document"
}

func (d *decoder) str(k, v *yaml.Node) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return "", d.errf(v, "%s: want a string, got %s", k.Value, kindName(v))
	}
	if v.Tag != "!!str" && v.Tag != "!!int" && v.Tag != "!!float" && v.Tag != "!!bool" {
		return "", d.errf(v, "%s: want a string, got tag %s", k.Value, v.Tag)
	}
	if strings.ContainsFunc(v.Value, func(r rune) bool { return r < ' ' || r == 0x7f || r == '\uFFFD' }) {
		return "", d.errf(v, "%s: contains control or invalid characters", k.Value)
	}
	return v.Value, nil
}

func (d *decoder) nonEmpty(k, v *yaml.Node) (string, error) {
	s, err := d.str(k, v)
	if err == nil && strings.TrimSpace(s) == "" {
		err = d.errf(v, "%s: empty", k.Value)
	}
	return s, err
}

func (d *decoder) boolean(k, v *yaml.Node) (bool, error) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" {
		return false, d.errf(v, "%s: want true or false, got %q", k.Value, v.Value)
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		return false, d.errf(v, "%s: %v", k.Value, err)
	}
	return b, nil
}

func (d *decoder) strList(k, v *yaml.Node) ([]string, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, d.errf(v, "%s: want a list, got %s", k.Value, kindName(v))
	}
	if len(v.Content) == 0 {
		return nil, d.errf(v, "%s: empty list", k.Value)
	}
	out := make([]string, 0, len(v.Content))
	for _, e := range v.Content {
		s, err := d.nonEmpty(k, e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func decodeSource(file string, root *yaml.Node) (SourceConfig, error) {
	d := &decoder{file: file}
	c := SourceConfig{File: file, Line: root.Line, MaxLineBytes: DefaultMaxLineBytes}
	kvs, err := d.fields(root, "source document")
	if err != nil {
		return c, err
	}
	// where remembers each key's node, so that cross-field errors point at a line.
	where := make(map[string]*yaml.Node, len(kvs))
	var port string
	for _, kv := range kvs {
		k, v := kv[0], kv[1]
		where[k.Value] = k
		switch k.Value {
		case "source":
			c.Kind, err = d.nonEmpty(k, v)
			if err == nil {
				switch c.Kind {
				case KindFile, KindKafka, KindSyslog:
				default:
					err = d.errf(v, "source: unknown source %q (want file, kafka or syslog)", c.Kind)
				}
			}
		case "filenames":
			var names []string
			names, err = d.strList(k, v)
			c.Filenames = append(c.Filenames, names...)
		case "filename":
			var name string
			name, err = d.nonEmpty(k, v)
			c.Filenames = append(c.Filenames, name)
		case "from_beginning":
			c.FromBeginning, err = d.boolean(k, v)
		case "labels":
			c.Labels, err = d.labels(k, v)
		case "max_line_bytes":
			c.MaxLineBytes, err = d.size(k, v)
		case "topic":
			c.Topic, err = d.nonEmpty(k, v)
		case "brokers":
			c.Brokers, err = d.strList(k, v)
			for i := 0; err == nil && i < len(c.Brokers); i++ {
				if _, _, e := net.SplitHostPort(c.Brokers[i]); e != nil {
					err = d.errf(v.Content[i], "brokers: %q is not host:port", c.Brokers[i])
				}
			}
		case "group_id":
			c.GroupID, err = d.nonEmpty(k, v)
		case "tls":
			c.TLS, err = d.tls(v)
		case "sasl":
			c.SASL, err = d.sasl(v)
		case "listen_addr":
			c.ListenAddr, err = d.nonEmpty(k, v)
		case "listen_port":
			var p string
			p, err = d.nonEmpty(k, v)
			if n, e := strconv.Atoi(p); err == nil && (e != nil || n < 1 || n > 65535) {
				err = d.errf(v, "listen_port: %q is not a port number", p)
			}
			port = p
		case "protocol":
			c.Protocol, err = d.nonEmpty(k, v)
			if err == nil && c.Protocol != "udp" && c.Protocol != "tcp" {
				err = d.errf(v, "protocol: %q is not udp or tcp", c.Protocol)
			}
		default:
			err = d.errf(k, "unknown key %q", k.Value)
		}
		if err != nil {
			return c, err
		}
	}
	if port != "" {
		// CrowdSec's form: listen_addr is a bare address and listen_port the port.
		if _, _, e := net.SplitHostPort(c.ListenAddr); e == nil {
			return c, d.errf(where["listen_port"], "listen_port: listen_addr %q already has a port", c.ListenAddr)
		}
		host := c.ListenAddr
		if host == "" {
			host = "127.0.0.1"
		}
		c.ListenAddr = net.JoinHostPort(host, port)
	}
	return c, d.check(&c, root, where)
}

// check validates the combination of keys of one document.
func (d *decoder) check(c *SourceConfig, root *yaml.Node, where map[string]*yaml.Node) error {
	at := func(key string) *yaml.Node {
		if n := where[key]; n != nil {
			return n
		}
		return root
	}
	if c.Kind == "" {
		if len(c.Filenames) == 0 {
			return d.errf(root, "document has neither source nor filenames")
		}
		c.Kind = KindFile
	}
	if c.Labels == nil {
		return d.errf(root, "labels: missing (need at least type)")
	}
	allowed := map[string][]string{
		KindFile:   {"source", "filenames", "filename", "from_beginning", "labels", "max_line_bytes"},
		KindKafka:  {"source", "topic", "brokers", "group_id", "tls", "sasl", "from_beginning", "labels", "max_line_bytes"},
		KindSyslog: {"source", "listen_addr", "listen_port", "protocol", "labels", "max_line_bytes"},
	}[c.Kind]
	for key, n := range where {
		if !contains(allowed, key) {
			return d.errf(n, "%s: not an option of a %s source", key, c.Kind)
		}
	}
	switch c.Kind {
	case KindFile:
		if len(c.Filenames) == 0 {
			return d.errf(root, "filenames: missing for a file source")
		}
		for _, p := range c.Filenames {
			if _, err := filepath.Match(p, ""); err != nil {
				return d.errf(at("filenames"), "filenames: bad pattern %q: %v", p, err)
			}
		}
	case KindKafka:
		if c.Topic == "" {
			return d.errf(root, "topic: missing for a kafka source")
		}
		if len(c.Brokers) == 0 {
			return d.errf(root, "brokers: missing for a kafka source")
		}
		if c.GroupID == "" {
			return d.errf(root, "group_id: missing for a kafka source (several engines share it)")
		}
	case KindSyslog:
		if c.ListenAddr == "" {
			return d.errf(root, "listen_addr: missing for a syslog source")
		}
		if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
			return d.errf(at("listen_addr"), "listen_addr: %q is not host:port (or set listen_port)", c.ListenAddr)
		}
		if c.Protocol == "" {
			c.Protocol = "udp"
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func (d *decoder) labels(k, v *yaml.Node) (map[string]string, error) {
	kvs, err := d.fields(v, "labels")
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		s, err := d.nonEmpty(kv[0], kv[1])
		if err != nil {
			return nil, err
		}
		out[kv[0].Value] = s
	}
	t, ok := out["type"]
	if !ok {
		return nil, d.errf(k, "labels: type missing (one of %s)", strings.Join(KnownTypes, ", "))
	}
	if !contains(KnownTypes, t) {
		for _, kv := range kvs {
			if kv[0].Value == "type" {
				return nil, d.errf(kv[1], "labels: unknown type %q (want one of %s)", t, strings.Join(KnownTypes, ", "))
			}
		}
	}
	return out, nil
}

func (d *decoder) size(k, v *yaml.Node) (int, error) {
	s, err := d.nonEmpty(k, v)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 64 || n > 16<<20 {
		return 0, d.errf(v, "%s: %q is not a byte count between 64 and %d", k.Value, s, 16<<20)
	}
	return n, nil
}

func (d *decoder) tls(v *yaml.Node) (*TLSConfig, error) {
	kvs, err := d.fields(v, "tls")
	if err != nil {
		return nil, err
	}
	t := &TLSConfig{}
	for _, kv := range kvs {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "ca_cert":
			t.CACert, err = d.nonEmpty(k, v)
		case "client_cert":
			t.ClientCert, err = d.nonEmpty(k, v)
		case "client_key":
			t.ClientKey, err = d.nonEmpty(k, v)
		case "insecure_skip_verify":
			t.InsecureSkipVerify, err = d.boolean(k, v)
		default:
			err = d.errf(k, "tls: unknown key %q", k.Value)
		}
		if err != nil {
			return nil, err
		}
	}
	if (t.ClientCert == "") != (t.ClientKey == "") {
		return nil, d.errf(v, "tls: client_cert and client_key go together")
	}
	return t, nil
}

func (d *decoder) sasl(v *yaml.Node) (*SASLConfig, error) {
	kvs, err := d.fields(v, "sasl")
	if err != nil {
		return nil, err
	}
	s := &SASLConfig{}
	for _, kv := range kvs {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "mechanism":
			s.Mechanism, err = d.nonEmpty(k, v)
			s.Mechanism = strings.ToLower(s.Mechanism)
			if err == nil && s.Mechanism != SASLPlain && s.Mechanism != SASLSCRAMSHA256 && s.Mechanism != SASLSCRAMSHA512 {
				err = d.errf(v, "sasl: unknown mechanism %q (want plain, scram-sha-256 or scram-sha-512)", s.Mechanism)
			}
		case "username":
			s.Username, err = d.nonEmpty(k, v)
		case "password":
			var pw string
			pw, err = d.str(k, v)
			s.Password = kafkaconn.Secret(pw)
		default:
			err = d.errf(k, "sasl: unknown key %q", k.Value)
		}
		if err != nil {
			return nil, err
		}
	}
	if s.Mechanism == "" {
		return nil, d.errf(v, "sasl: mechanism missing")
	}
	if s.Username == "" {
		return nil, d.errf(v, "sasl: username missing")
	}
	return s, nil
}
