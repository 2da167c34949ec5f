package main

import (
	"log/slog"
	"strings"
	"testing"
)

func TestParseFlagsLogLevel(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil || o.logLevel != slog.LevelInfo {
		t.Fatalf("default: level %v, err %v; want info", o.logLevel, err)
	}
	o, err = parseFlags([]string{"--log-level", "debug"})
	if err != nil || o.logLevel != slog.LevelDebug {
		t.Fatalf("--log-level debug: level %v, err %v", o.logLevel, err)
	}
	t.Setenv("CHATTERPRO_LOG_LEVEL", "warn")
	o, err = parseFlags(nil)
	if err != nil || o.logLevel != slog.LevelWarn {
		t.Fatalf("CHATTERPRO_LOG_LEVEL=warn: level %v, err %v", o.logLevel, err)
	}
	if _, err := parseFlags([]string{"--log-level", "loud"}); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("--log-level loud: err %v; want an error naming the flag", err)
	}
}
