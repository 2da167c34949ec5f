package presence

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Golden entry infos: what a tracker stores for an entry, for the next
// format's tests; -golden.write writes them to
// testdata/info-<version>.json.
var goldenWrite = flag.Bool("golden.write", false, "write testdata/info-<version>.json from what this code stores")

const goldenInfoFormat = infoFormat

var infoSamples = []info{
	{Key: "alice", Since: 1700000000000000000},
	{Key: "bob", Meta: json.RawMessage(`{"name":"Bob ✓","tabs":2}`), Since: 1700000000000000001, Grace: true},
}

// encodeSample encodes in as Track does.
func encodeSample(in info) []byte {
	in.Format = infoFormat
	b, _ := json.Marshal(in)
	return b
}

// TestInfoCapture encodes the samples as a tracker stores them and reads
// them back.
func TestInfoCapture(t *testing.T) {
	var out []string
	for _, in := range infoSamples {
		b := encodeSample(in)
		var got info
		if err := json.Unmarshal(b, &got); err != nil || got.Key != in.Key || string(got.Meta) != string(in.Meta) || got.Since != in.Since || got.Grace != in.Grace {
			t.Errorf("%s read back as %+v, %v", b, got, err)
		}
		out = append(out, string(b))
	}
	if *goldenWrite {
		b, _ := json.MarshalIndent(out, "", "  ")
		name := filepath.Join("testdata", fmt.Sprintf("info-%d.json", goldenInfoFormat))
		if err := os.WriteFile(name, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v1Info is format 1's info, frozen: what a tracker of the releases before
// versions reads. Never change it.
type v1Info struct {
	Key   string          `json:"k"`
	Meta  json.RawMessage `json:"m,omitempty"`
	Since int64           `json:"t"`
	Grace bool            `json:"g,omitempty"`
}

// TestInfoFormats: this code reads the infos format 1 wrote (testdata),
// and format 1's frozen decoder reads what this code writes, so that
// trackers of both see each other's entries during an upgrade.
func TestInfoFormats(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("info-%d.json", infoFormat-1)))
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	if err := json.Unmarshal(b, &old); err != nil || len(old) != len(infoSamples) {
		t.Fatalf("%d infos, %v", len(old), err)
	}
	for i, in := range infoSamples {
		var got info
		if err := json.Unmarshal([]byte(old[i]), &got); err != nil || got.Format != 0 || got.Key != in.Key || string(got.Meta) != string(in.Meta) || got.Since != in.Since || got.Grace != in.Grace {
			t.Errorf("format 1 info %s read as %+v, %v; want %+v", old[i], got, err, in)
		}
		enc := encodeSample(in)
		if !strings.Contains(string(enc), fmt.Sprintf(`"v":%d`, infoFormat)) {
			t.Errorf("%s does not name format %d", enc, infoFormat)
		}
		var v1 v1Info
		if err := json.Unmarshal(enc, &v1); err != nil || v1.Key != in.Key || string(v1.Meta) != string(in.Meta) || v1.Since != in.Since || v1.Grace != in.Grace {
			t.Errorf("format 1 reads %s as %+v, %v; want %+v", enc, v1, err, in)
		}
	}
}
