package scenario

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis-ips/portcullis/engine/event"
)

// HubEvent is the event as CrowdSec hub-format expressions see it (`evt`),
// with the field names CrowdSec's nginx, apache and sshd parsers and its
// http-logs enricher produce. Meta and Parsed are structs, not maps: an
// expression naming a field outside this set fails to compile, with the
// field's name, instead of silently reading "".
type HubEvent struct {
	// Type is "LOG" for a log line, "OVFLW" for a reprocessed overflow.
	Type   string    `expr:"Type"`
	Time   time.Time `expr:"Time"`
	Meta   HubMeta   `expr:"Meta"`
	Parsed HubParsed `expr:"Parsed"`
	Line   HubLine   `expr:"Line"`
	// Overflow is set on reprocessed overflows.
	Overflow HubOverflow `expr:"Overflow"`
}

// HubMeta holds the evt.Meta fields.
type HubMeta struct {
	LogType       string `expr:"log_type"`
	Service       string `expr:"service"`
	SourceIP      string `expr:"source_ip"`
	SubType       string `expr:"sub_type"`
	HTTPStatus    string `expr:"http_status"`
	HTTPPath      string `expr:"http_path"`
	HTTPVerb      string `expr:"http_verb"`
	HTTPUserAgent string `expr:"http_user_agent"`
	HTTPArgsLen   string `expr:"http_args_len"`
	TargetUser    string `expr:"target_user"`
	TargetFQDN    string `expr:"target_fqdn"`
	Username      string `expr:"username"`
	Machine       string `expr:"machine"`
}

// HubParsed holds the evt.Parsed fields.
type HubParsed struct {
	Verb            string `expr:"verb"`
	Request         string `expr:"request"`
	HTTPArgs        string `expr:"http_args"`
	HTTPVersion     string `expr:"http_version"`
	Status          string `expr:"status"`
	BodyBytesSent   string `expr:"body_bytes_sent"`
	HTTPReferer     string `expr:"http_referer"`
	HTTPUserAgent   string `expr:"http_user_agent"`
	RemoteAddr      string `expr:"remote_addr"`
	FileName        string `expr:"file_name"`
	FileExt         string `expr:"file_ext"`
	FileDir         string `expr:"file_dir"`
	FileFrag        string `expr:"file_frag"`
	StaticRessource string `expr:"static_ressource"`
	Program         string `expr:"program"`
	Message         string `expr:"message"`
	SSHDClientIP    string `expr:"sshd_client_ip"`
	SSHDInvalidUser string `expr:"sshd_invalid_user"`
}

// HubLine is evt.Line.
type HubLine struct {
	Raw string `expr:"Raw"`
	Src string `expr:"Src"`
}

// HubOverflow is evt.Overflow of a reprocessed overflow.
type HubOverflow struct {
	Alert HubAlert `expr:"Alert"`
}

// HubAlert is evt.Overflow.Alert.
type HubAlert struct {
	Scenario    string `expr:"Scenario"`
	EventsCount int    `expr:"EventsCount"`
}

// HubQueue is the `queue` a conditional scenario's condition sees: the
// bucket's events, oldest first.
type HubQueue struct {
	Queue []*HubEvent `expr:"Queue"`
	L     int         `expr:"L"`
}

// hubEnv is the environment of every hub-format expression.
type hubEnv struct {
	Evt   *HubEvent `expr:"evt"`
	Queue *HubQueue `expr:"queue"`
}

// statusText holds the decimal form of every HTTP status, so the string
// CrowdSec's expressions compare against costs no allocation.
var statusText = func() [1000]string {
	var t [1000]string
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func itoaSmall(n int) string {
	if n >= 0 && n < len(statusText) {
		return statusText[n]
	}
	return strconv.Itoa(n)
}

// crowdsecStatic are the extensions CrowdSec's http-logs enricher calls
// static (static_ressource), compared upper-cased.
var crowdsecStatic = map[string]bool{
	".JPG": true, ".CSS": true, ".JS": true, ".JPEG": true, ".PNG": true, ".SVG": true, ".MAP": true,
	".ICO": true, ".OTF": true, ".GIF": true, ".MP3": true, ".MP4": true, ".WOFF": true, ".WOFF2": true,
	".TTF": true, ".EOT": true, ".WEBP": true, ".WAV": true, ".GZ": true, ".BROTLI": true, ".BVR": true,
	".TS": true, ".BMP": true,
}

// addrCache remembers the text of the last address converted, since
// consecutive events often share a source.
type addrCache struct {
	a netip.Addr
	s string
}

func (c *addrCache) text(a netip.Addr) string {
	if a != c.a || c.s == "" {
		c.a, c.s = a, a.String()
	}
	return c.s
}

// fillHub sets h to the hub view of ev.
func fillHub(h *HubEvent, ev *event.Event, ac *addrCache) {
	*h = HubEvent{Type: "LOG", Time: ev.Time}
	if ev.Source.IsValid() {
		h.Meta.SourceIP = ac.text(ev.Source)
	}
	h.Meta.Machine = ev.Host
	switch ev.Type {
	case event.TypeHTTPAccess, event.TypeHTTPError:
		fillHTTP(h, ev)
	case event.TypeSSHFailedAuth, event.TypeSSHInvalidUser, event.TypeSSHTooManyAuth, event.TypeSSHPreauthClose:
		h.Meta.Service = "ssh"
		h.Parsed.Program = "sshd"
		h.Parsed.Message = ev.Message
		h.Parsed.SSHDClientIP = h.Meta.SourceIP
		if ev.Type != event.TypeSSHPreauthClose || ev.User != "" {
			h.Meta.LogType = "ssh_failed-auth"
			h.Meta.TargetUser = ev.User
			h.Parsed.SSHDInvalidUser = ev.User
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fillHTTP(h *HubEvent, ev *event.Event) {
	m, p := &h.Meta, &h.Parsed
	m.Service = "http"
	m.LogType = "http_access-log"
	p.Program = ev.Parser
	if ev.Type == event.TypeHTTPError {
		m.LogType = "http_error-log"
		p.Message = ev.Message
	} else {
		m.HTTPStatus = itoaSmall(ev.Status)
		m.HTTPUserAgent = dash(ev.UserAgent)
		p.Status = m.HTTPStatus
		p.HTTPUserAgent = m.HTTPUserAgent
		p.HTTPReferer = dash(ev.Referer)
		p.BodyBytesSent = itoaSmall(int(ev.Bytes))
	}
	m.HTTPVerb, p.Verb = ev.Method, ev.Method
	m.HTTPPath = ev.Path
	p.HTTPVersion = strings.TrimPrefix(ev.Proto, "HTTP/")
	p.RemoteAddr = m.SourceIP
	// http-logs: the query string splits off at the first '?'; then the
	// path splits into directory, file and extension.
	req := ev.Path
	if i := strings.IndexByte(req, '?'); i >= 0 {
		req, p.HTTPArgs = req[:i], req[i+1:]
	}
	p.Request = req
	m.HTTPArgsLen = itoaSmall(len(p.HTTPArgs))
	p.StaticRessource = "false"
	slash := strings.LastIndexByte(req, '/')
	if slash < 0 {
		return
	}
	p.FileDir = req[:slash+1]
	rest := req[slash+1:]
	if rest == "" {
		return
	}
	frag, ext := rest, ""
	if dot := strings.LastIndexByte(rest, '.'); dot > 0 {
		frag, ext = rest[:dot], rest[dot:]
	}
	p.FileFrag, p.FileExt, p.FileName = frag, ext, rest
	if isCrowdsecStatic(ext) {
		p.StaticRessource = "true"
	}
}

// isCrowdsecStatic upper-cases ext on the stack (the map lookup of a
// converted byte slice does not allocate).
func isCrowdsecStatic(ext string) bool {
	var b [8]byte
	if ext == "" || len(ext) > len(b) {
		return false
	}
	for i := 0; i < len(ext); i++ {
		b[i] = foldByte(ext[i], 'u')
	}
	return crowdsecStatic[string(b[:len(ext)])]
}
