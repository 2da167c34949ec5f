package channellayer

// FormatVersion exposes formatVersion to the tests.
const FormatVersion = formatVersion

// EnvelopeTo exposes envelopeTo to the tests: the envelope of a directed
// send to channel, of the given process, in the format it reads.
func EnvelopeTo(process, channel string, m Message) string { return envelopeTo(process, channel, m) }
