package chat

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Golden presence infos: what this code stores as a connection's presence
// entry, for the next format's tests; -golden.write writes them to
// testdata/presence-info-<version>.json.
var goldenWrite = flag.Bool("golden.write", false, "write testdata/presence-info-<version>.json from what this code stores")

const goldenInfoFormat = infoFormat

var infoSamples = []presenceInfo{
	{Session: "s-1", Name: "Alice", At: 1700000000000},
	{Session: "s-2", Name: "Bob ✓ \"quoted\"", State: "grace", At: 1700000000001},
}

// encodeSample encodes p as hub.track does.
func encodeSample(p presenceInfo) []byte {
	p.Format = infoFormat
	b, _ := json.Marshal(p)
	return b
}

// TestPresenceInfoCapture encodes the samples as this code stores them and
// reads them back.
func TestPresenceInfoCapture(t *testing.T) {
	var out []string
	for _, p := range infoSamples {
		b := encodeSample(p)
		got, ok := decodeInfo(b)
		if !ok || got.Session != p.Session || got.Name != p.Name || got.State != p.State || got.At != p.At {
			t.Errorf("%s read back as %+v, %v", b, got, ok)
		}
		out = append(out, string(b))
	}
	if *goldenWrite {
		b, _ := json.MarshalIndent(out, "", "  ")
		name := filepath.Join("testdata", fmt.Sprintf("presence-info-%d.json", goldenInfoFormat))
		if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v1PresenceInfo and v1DecodeInfo are format 1's, frozen: what a node of
// the releases before versions reads. Never change them.
type v1PresenceInfo struct {
	Session string `json:"s"`
	Name    string `json:"n"`
	State   string `json:"st,omitempty"`
	At      int64  `json:"at"`
}

func v1DecodeInfo(b []byte) (v1PresenceInfo, bool) {
	var p v1PresenceInfo
	return p, json.Unmarshal(b, &p) == nil && p.Session != ""
}

// TestPresenceInfoFormats: this code reads the infos format 1 wrote
// (testdata), and format 1's frozen decoder reads what this code writes,
// so that nodes of both list each other's users during an upgrade.
func TestPresenceInfoFormats(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("presence-info-%d.json", infoFormat-1)))
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	if err := json.Unmarshal(b, &old); err != nil || len(old) != len(infoSamples) {
		t.Fatalf("%d infos, %v", len(old), err)
	}
	for i, p := range infoSamples {
		got, ok := decodeInfo([]byte(old[i]))
		if !ok || got.Format != 0 || got.Session != p.Session || got.Name != p.Name || got.State != p.State || got.At != p.At {
			t.Errorf("format 1 info %s read as %+v, %v; want %+v", old[i], got, ok, p)
		}
		enc := encodeSample(p)
		if !json.Valid(enc) || !strings.Contains(string(enc), fmt.Sprintf(`"v":%d`, infoFormat)) {
			t.Errorf("%s does not name format %d", enc, infoFormat)
		}
		v1, ok := v1DecodeInfo(enc)
		if !ok || v1 != (v1PresenceInfo{Session: p.Session, Name: p.Name, State: p.State, At: p.At}) {
			t.Errorf("format 1 reads %s as %+v, %v; want %+v", enc, v1, ok, p)
		}
	}
}
