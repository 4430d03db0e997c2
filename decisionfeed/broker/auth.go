package broker

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/portcullis-ips/portcullis/internal/kafkaconn"
)

// DefaultAdmin is the user allowed to delete topics and records when none
// is named.
const DefaultAdmin = "admin"

// maxUsersFileBytes bounds a users file; a larger one is a mistake.
const maxUsersFileBytes = 1 << 20

// User is a SASL user of the broker. Every user can authenticate with
// PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.
type User struct {
	Name     string
	Password kafkaconn.Secret
}

// LoadUsers reads a users file (see ParseUsers).
func LoadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sasl users: %w", err)
	}
	if len(b) > maxUsersFileBytes {
		return nil, fmt.Errorf("sasl users %s: larger than %d bytes", path, maxUsersFileBytes)
	}
	return ParseUsers(path, b)
}

// ParseUsers reads "user:password" lines; blank lines and lines starting
// with # are skipped. The password is the rest of the line after the first
// colon. Errors are "NAME:LINE: reason" and never contain a password.
func ParseUsers(name string, data []byte) ([]User, error) {
	var users []User
	seen := map[string]bool{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		line = bytes.TrimSuffix(line, []byte("\r"))
		if t := bytes.TrimSpace(line); len(t) == 0 || t[0] == '#' {
			continue
		}
		user, pw, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return nil, fmt.Errorf("%s:%d: want user:password", name, n)
		}
		u := string(user)
		if err := validUserName(u); err != nil {
			return nil, fmt.Errorf("%s:%d: user name: %w", name, n, err)
		}
		if len(pw) == 0 {
			return nil, fmt.Errorf("%s:%d: user %s: empty password", name, n, u)
		}
		if bytes.ContainsAny(pw, "\x00") {
			return nil, fmt.Errorf("%s:%d: user %s: password contains a NUL byte", name, n, u)
		}
		if seen[u] {
			return nil, fmt.Errorf("%s:%d: user %s: listed twice", name, n, u)
		}
		seen[u] = true
		users = append(users, User{Name: u, Password: kafkaconn.Secret(pw)})
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", name)
	}
	return users, nil
}

// validUserName accepts what SCRAM and Kafka principals carry without
// escaping: printable ASCII without spaces, ',', '=' or ':'.
func validUserName(u string) error {
	if u == "" {
		return errors.New("empty")
	}
	if len(u) > 128 {
		return errors.New("longer than 128 bytes")
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c >= 0x7f || c == ',' || c == '=' || c == ':' {
			return fmt.Errorf("%q holds a character outside printable ASCII or one of ' ,=:'", u)
		}
	}
	return nil
}

// authOpts returns the kfake options of cfg's TLS listener and SASL users.
// With users, ACLs are on: the admin is a superuser, every other user may
// do everything except delete topics or records, alter topic or cluster
// configurations, or change ACLs and credentials.
func authOpts(cfg *Config) ([]kfake.Opt, error) {
	var opts []kfake.Opt
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("tls: give both the certificate and the key (--tls-cert, --tls-key)")
		}
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("tls certificate %s, key %s: %s", cfg.TLSCert, cfg.TLSKey, strings.TrimPrefix(err.Error(), "tls: "))
		}
		if time.Now().After(pair.Leaf.NotAfter) {
			return nil, fmt.Errorf("tls certificate %s: expired at %s", cfg.TLSCert, pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
	}
	if len(cfg.Users) == 0 {
		return opts, nil
	}
	admin := cfg.Admin
	if admin == "" {
		admin = DefaultAdmin
	}
	found := false
	opts = append(opts, kfake.EnableSASL(), kfake.EnableACLs())
	for _, u := range cfg.Users {
		for i, m := range []string{kafkaconn.MechanismPlain, kafkaconn.MechanismSCRAMSHA256, kafkaconn.MechanismSCRAMSHA512} {
			switch {
			case u.Name == admin:
				found = true
				opts = append(opts, kfake.Superuser(m, u.Name, string(u.Password)))
			case i == 0:
				opts = append(opts, kfake.User(m, u.Name, string(u.Password), userACLs()...))
			default:
				opts = append(opts, kfake.User(m, u.Name, string(u.Password)))
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("sasl users: no admin user %q (--sasl-admin) among them", admin)
	}
	return opts, nil
}

// userACLs are the ACLs of every user but the admin. A deny wins over an
// allow, as in Kafka.
func userACLs() []kfake.ACL {
	allow := func(rt kmsg.ACLResourceType, name string) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}
	}
	deny := func(rt kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: rt, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op}
	}
	return []kfake.ACL{
		allow(kmsg.ACLResourceTypeTopic, "*"),
		allow(kmsg.ACLResourceTypeGroup, "*"),
		allow(kmsg.ACLResourceTypeTransactionalId, "*"),
		allow(kmsg.ACLResourceTypeCluster, clusterResource),
		// DeleteTopics and DeleteRecords both need Delete on the topic.
		deny(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationDelete),
		// retention.ms=1 would delete records too.
		deny(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationAlterConfigs),
		deny(kmsg.ACLResourceTypeTopic, "*", kmsg.ACLOperationAlter),
		// Alter on the cluster covers ACL and SCRAM credential changes.
		deny(kmsg.ACLResourceTypeCluster, clusterResource, kmsg.ACLOperationAlter),
		deny(kmsg.ACLResourceTypeCluster, clusterResource, kmsg.ACLOperationAlterConfigs),
	}
}

// clusterResource is the name Kafka gives the cluster resource.
const clusterResource = "kafka-cluster"

// persistedACL is one entry of kfake's acls.json.
type persistedACL struct {
	Principal    string `json:"principal"`
	Host         string `json:"host"`
	ResourceType int8   `json:"resource_type"`
	ResourceName string `json:"resource_name"`
	Pattern      int8   `json:"pattern"`
	Operation    int8   `json:"operation"`
	Permission   int8   `json:"permission"`
}

// resetAuthState makes the data directory's SASL users and ACLs those of
// cfg. kfake seeds users and ACLs only into a new data directory and
// reloads its saved ones afterwards, so without this a restart would keep
// old passwords and lose the ACLs of new users.
func resetAuthState(cfg *Config) error {
	if cfg.DataDir == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "meta.json")); errors.Is(err, os.ErrNotExist) {
		return nil // new: kfake seeds it
	}
	if err := os.Remove(filepath.Join(cfg.DataDir, "sasl.json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reset saved sasl users: %w", err)
	}
	admin := cfg.Admin
	if admin == "" {
		admin = DefaultAdmin
	}
	acls := []persistedACL{}
	for _, u := range cfg.Users {
		if u.Name == admin {
			continue
		}
		for _, a := range userACLs() {
			perm := kmsg.ACLPermissionTypeDeny
			if a.Allow {
				perm = kmsg.ACLPermissionTypeAllow
			}
			acls = append(acls, persistedACL{
				Principal: "User:" + u.Name, Host: "*", ResourceType: int8(a.Resource), ResourceName: a.Name,
				Pattern: int8(a.Pattern), Operation: int8(a.Operation), Permission: int8(perm),
			})
		}
	}
	b, err := json.Marshal(struct {
		Version int            `json:"version"`
		ACLs    []persistedACL `json:"acls"`
	}{1, acls})
	if err != nil {
		return fmt.Errorf("encode acls: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.DataDir, "acls.json"), b, 0o600); err != nil {
		return fmt.Errorf("reset saved acls: %w", err)
	}
	return nil
}

// isLoopback reports whether a listen address only accepts local clients.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
