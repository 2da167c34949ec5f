package presence

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Golden entry infos: what a tracker stores for an entry, for the next
// format's tests; -golden.write writes them to
// testdata/info-<version>.json.
var goldenWrite = flag.Bool("golden.write", false, "write testdata/info-<version>.json from what this code stores")

const goldenInfoFormat = 1

var infoSamples = []info{
	{Key: "alice", Since: 1700000000000000000},
	{Key: "bob", Meta: json.RawMessage(`{"name":"Bob ✓","tabs":2}`), Since: 1700000000000000001, Grace: true},
}

func encodeSample(in info) []byte {
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
