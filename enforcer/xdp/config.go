package xdp

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Mode is how the program is attached to an interface.
type Mode string

// The attach modes.
const (
	// ModeNative runs the program in the driver, before any socket buffer
	// exists. Attaching fails on drivers without XDP support.
	ModeNative Mode = "native"
	// ModeGeneric runs the program on socket buffers; it works on every
	// interface but saves little over netfilter.
	ModeGeneric Mode = "generic"
	// ModeAuto tries native and falls back to generic, reporting the
	// fallback in Attachment.Fallback.
	ModeAuto Mode = "auto"
)

// BPFFSRoot is where the BPF file system is (or gets) mounted.
const BPFFSRoot = "/sys/fs/bpf"

// DefaultPinPath is the directory that holds the pinned maps and links.
const DefaultPinPath = BPFFSRoot + "/portcullis"

// Config is the XDP backend's configuration.
type Config struct {
	// Interfaces are the names of the interfaces to attach to.
	Interfaces []string `yaml:"interfaces"`
	// Mode is native, generic or auto.
	Mode Mode `yaml:"mode"`
	// PinPath is the bpffs directory holding the maps and links; it must
	// lie under /sys/fs/bpf and its last element must start with
	// "portcullis", so that cleanup never touches anything else.
	PinPath string `yaml:"pin_path"`
	// MaxExactV4 and MaxExactV6 bound the single-address bans per family.
	MaxExactV4 uint32 `yaml:"max_exact_v4"`
	MaxExactV6 uint32 `yaml:"max_exact_v6"`
	// MaxRangesV4 and MaxRangesV6 bound the range bans per family.
	MaxRangesV4 uint32 `yaml:"max_ranges_v4"`
	MaxRangesV6 uint32 `yaml:"max_ranges_v6"`
	// MaxReasons bounds the distinct (reason, origin) pairs that get their
	// own drop counter; further ones share the OverflowReason counter.
	MaxReasons uint32 `yaml:"max_reasons"`
	// Prealloc allocates the exact-address maps in full when they are
	// created: a million bans load about twice as fast, and the kernel
	// memory is that of full maps from the start (about 88 MB for
	// MaxExactV4 = 1,048,576). Without it memory follows the number of
	// bans. Changing it requires a cleanup, as with the sizes.
	Prealloc bool `yaml:"prealloc"`
	// AllowVolatilePins lets New go on when the pin directory is on a
	// bpffs that will not outlive the process (one mounted in a private
	// mount namespace, as `ip netns exec` makes): the program then
	// detaches when the process ends. By default New refuses.
	AllowVolatilePins bool `yaml:"allow_volatile_pins"`
}

// Limits on map sizes, so that a typo cannot ask the kernel for gigabytes.
const (
	maxExactEntries = 1 << 26
	maxRangeEntries = 1 << 24
	maxReasons      = 1 << 16
	maxIfaceNameLen = 15 // IFNAMSIZ - 1
)

// DefaultConfig returns the defaults: auto mode, pins under
// /sys/fs/bpf/portcullis, room for 1,048,576 IPv4 and 524,288 IPv6 addresses,
// 65,536 ranges per family and 1,024 reasons, preallocated. Interfaces must
// still be set.
func DefaultConfig() Config {
	return Config{
		Mode:        ModeAuto,
		PinPath:     DefaultPinPath,
		MaxExactV4:  1 << 20,
		MaxExactV6:  1 << 19,
		MaxRangesV4: 1 << 16,
		MaxRangesV6: 1 << 16,
		MaxReasons:  1 << 10,
		Prealloc:    true,
	}
}

// Validate checks the configuration without touching the system.
func (c Config) Validate() error {
	if len(c.Interfaces) == 0 {
		return errors.New("interfaces: none given")
	}
	seen := make(map[string]bool, len(c.Interfaces))
	for i, name := range c.Interfaces {
		if err := validIfaceName(name); err != nil {
			return fmt.Errorf("interfaces[%d]: %w", i, err)
		}
		if seen[name] {
			return fmt.Errorf("interfaces[%d]: %q listed twice", i, name)
		}
		seen[name] = true
	}
	switch c.Mode {
	case ModeNative, ModeGeneric, ModeAuto:
	default:
		return fmt.Errorf("mode: %q is not native, generic or auto", c.Mode)
	}
	if err := ValidatePinPath(c.PinPath); err != nil {
		return fmt.Errorf("pin_path: %w", err)
	}
	return c.validateMaps()
}

func (c Config) validateMaps() error {
	sizes := []struct {
		name     string
		val, max uint32
		min      uint32
	}{
		{"max_exact_v4", c.MaxExactV4, maxExactEntries, 1},
		{"max_exact_v6", c.MaxExactV6, maxExactEntries, 1},
		{"max_ranges_v4", c.MaxRangesV4, maxRangeEntries, 1},
		{"max_ranges_v6", c.MaxRangesV6, maxRangeEntries, 1},
		// Reason id 0 is the overflow counter, so one more is needed.
		{"max_reasons", c.MaxReasons, maxReasons, 2},
	}
	for _, s := range sizes {
		if s.val < s.min || s.val > s.max {
			return fmt.Errorf("%s: %d is outside [%d, %d]", s.name, s.val, s.min, s.max)
		}
	}
	return nil
}

// ValidatePinPath checks that p is a clean absolute path under /sys/fs/bpf
// whose last element starts with "portcullis".
func ValidatePinPath(p string) error {
	if p == "" {
		return errors.New("empty")
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("%q is not a clean absolute path", p)
	}
	if !strings.HasPrefix(p, BPFFSRoot+"/") {
		return fmt.Errorf("%q is not under %s", p, BPFFSRoot)
	}
	if !strings.HasPrefix(filepath.Base(p), "portcullis") {
		return fmt.Errorf("%q: last element must start with \"portcullis\"", p)
	}
	return nil
}

func validIfaceName(name string) error {
	if name == "" {
		return errors.New("empty interface name")
	}
	if len(name) > maxIfaceNameLen {
		return fmt.Errorf("interface name %q longer than %d bytes", name, maxIfaceNameLen)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || c == '/' || c == ':' {
			return fmt.Errorf("interface name %q: byte %d is not allowed", name, i)
		}
	}
	return nil
}
