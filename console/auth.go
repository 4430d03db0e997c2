package console

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Role is what a user may do.
type Role string

// The roles: an admin adds and deletes decisions, a reader only looks.
const (
	RoleAdmin    Role = "admin"
	RoleReadOnly Role = "readonly"
)

// user is one account of the password file. Only a hash of the password
// is kept in memory.
type user struct {
	name string
	role Role
	hash [sha256.Size]byte
}

// LoadUsers reads the password file. Each line is "NAME:ROLE:PASSWORD"
// (ROLE admin or readonly); a file of one line without ':' is a token for
// the user "admin". Blank lines and lines starting with '#' are skipped.
// Errors name the file and line but never echo a password.
func LoadUsers(path string) (map[string]user, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	users := map[string]user{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		l := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.Contains(l, ":") {
			if len(users) > 0 || line != 1 {
				return nil, fmt.Errorf("%s:%d: want NAME:ROLE:PASSWORD (a bare token only as the file's single line)", path, line)
			}
			users["admin"] = user{name: "admin", role: RoleAdmin, hash: sha256.Sum256([]byte(l))}
			continue
		}
		name, rest, _ := strings.Cut(l, ":")
		role, pw, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
			return nil, fmt.Errorf("%s:%d: want NAME:ROLE:PASSWORD", path, line)
		case !validName(name):
			return nil, fmt.Errorf("%s:%d: user name %q: want 1-32 of a-z A-Z 0-9 . _ -", path, line, name)
		case Role(role) != RoleAdmin && Role(role) != RoleReadOnly:
			return nil, fmt.Errorf("%s:%d: role %q: want admin or readonly", path, line, role)
		case len(pw) < 8:
			return nil, fmt.Errorf("%s:%d: password of %s shorter than 8 characters", path, line, name)
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%s:%d: user %s given twice", path, line, name)
		}
		users[name] = user{name: name, role: Role(role), hash: sha256.Sum256([]byte(pw))}
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", path)
	}
	return users, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	})
}

// check returns the user whose name and password match, comparing hashes
// in constant time.
func check(users map[string]user, name, password string) (user, bool) {
	u, ok := users[name]
	h := sha256.Sum256([]byte(password))
	if !ok {
		// Compare anyway so an unknown name costs what a known one does.
		subtle.ConstantTimeCompare(h[:], make([]byte, sha256.Size))
		return user{}, false
	}
	return u, subtle.ConstantTimeCompare(h[:], u.hash[:]) == 1
}

// session is a logged-in user.
type session struct {
	user    user
	csrf    string
	expires time.Time
}

// sessions holds the sessions by id; ids and CSRF tokens are 32 random
// bytes.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	ttl time.Duration
}

func newToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

func (s *sessions) create(u user, now time.Time) (id string, sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.m { // sweep, so abandoned sessions do not pile up
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	id = newToken()
	sess = &session{user: u, csrf: newToken(), expires: now.Add(s.ttl)}
	s.m[id] = sess
	return id, sess
}

func (s *sessions) get(id string, now time.Time) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	if !ok || now.After(sess.expires) {
		delete(s.m, id)
		return nil, false
	}
	return sess, true
}

func (s *sessions) drop(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// loginLimiter allows each client address a few login attempts a minute.
type loginLimiter struct {
	mu sync.Mutex
	m  map[netip.Addr]*rate.Limiter
}

// allow reports whether addr may try to log in now: a burst of 5, then
// one attempt every 12 seconds.
func (l *loginLimiter) allow(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) > 10000 {
		l.m = map[netip.Addr]*rate.Limiter{} // bounded: forget everyone at worst
	}
	lim, ok := l.m[addr]
	if !ok {
		lim = rate.NewLimiter(rate.Every(12*time.Second), 5)
		l.m[addr] = lim
	}
	return lim.Allow()
}
