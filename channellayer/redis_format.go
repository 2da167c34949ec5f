package channellayer

import (
	"strconv"
	"strings"
)

// Format versions of what the Redis layer stores in and publishes through
// Redis, so that a deployment can be upgraded node by node under traffic.
//
// Format 1 is that of the releases before format versions: nothing in it
// names a version. Format 2 (this code) names its version where format 1
// readers ignore it, and changes nothing else:
//
//   - A plain envelope's first line (the target or excepted channel) is
//     "v2:" and then the channel. A format 1 node takes it as the name of
//     a channel a group send skips, which it never owns, so it delivers
//     the message as before. A directed send goes to one process, whose ID
//     names the format it reads ("p<hex>.2" for format 2, "p<hex>" for
//     format 1; see processFormat): a process that reads format 1 gets a
//     format 1 envelope.
//   - A recorded envelope starts with a version item, "\nv2\n1\n2\nv{}"
//     right after "\n*": an item whose ID is not a history ID, which a
//     format 1 node skips as it skips any such item.
//   - A history stream entry has a field "v" ("2") besides "t" and "d";
//     format 1 readers read only those two.
//   - A group's record-key hash and presence hash hold the field "" (never
//     a key: keys are not empty) with the version: format 1 scripts only
//     read the fields of keys they look up or list.
//   - A directory index has a key of its own, "<prefix>:dir:{<index>}:v",
//     with the version, which format 1 never reads.
//
// A reader takes a payload without a version as format 1 and reads it as
// before, and one that names a version newer than its own as its own:
// later formats may add, never change, what earlier ones read.
const formatVersion = 2

// formatTag is formatVersion as it is written.
var formatTag = strconv.Itoa(formatVersion)

// formatLua defines FORMAT, the format version as a string, for the
// scripts that write.
var formatLua = "local FORMAT = '" + formatTag + "'\n"

// versionItem is the version item of a recorded envelope (see above).
var versionItem = "\nv" + formatTag + "\n1\n2\nv{}"

// processTag ends the ID of a process of this format: "p<hex>.<version>".
var processTag = "." + formatTag

// processFormat returns the format version a process reads, from its ID.
func processFormat(process string) int {
	i := strings.LastIndexByte(process, '.')
	if i < 0 {
		return 1
	}
	v, err := strconv.Atoi(process[i+1:])
	if err != nil || v < 1 {
		return 1
	}
	return v
}

// cutFormat splits the first line of a plain envelope into the format
// version it names (1 if none) and the channel.
func cutFormat(line string) (int, string) {
	if !strings.HasPrefix(line, "v") {
		return 1, line
	}
	tag, target, ok := strings.Cut(line[1:], ":")
	v, err := strconv.Atoi(tag)
	if !ok || err != nil || v < 2 {
		return 1, line
	}
	return v, target
}

// cutVersionItem removes the version item from the items of a recorded
// envelope (what follows "\n*"), if they start with one, and returns the
// format version it names (1 if none).
func cutVersionItem(items string) (int, string) {
	rest, ok := strings.CutPrefix(items, "\nv")
	if !ok {
		return 1, items
	}
	tag, rest, ok := strings.Cut(rest, "\n")
	v, err := strconv.Atoi(tag)
	if !ok || err != nil || v < 2 {
		return 1, items
	}
	// The item's type and body: "1\n2\nv{}" in format 2; later formats
	// may say more in them.
	lt, rest, ok1 := strings.Cut(rest, "\n")
	lb, rest, ok2 := strings.Cut(rest, "\n")
	nt, err1 := strconv.Atoi(lt)
	nb, err2 := strconv.Atoi(lb)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || nt < 0 || nb < 0 || nt > len(rest) || nb > len(rest)-nt {
		return 1, items
	}
	return v, rest[nt+nb:]
}
