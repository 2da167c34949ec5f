package main

import (
	"log/slog"
	"strings"
	"testing"
	"time"
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

// --rate (and CHATTERPRO_RATE) takes 0 or a positive, finite number; NaN
// and infinities would turn the limit off unnoticed.
func TestFlagRate(t *testing.T) {
	tests := []struct {
		name    string
		env     string // CHATTERPRO_RATE, if not empty
		args    []string
		want    float64
		wantErr string
	}{
		{name: "default", want: 10},
		{name: "zero turns it off", args: []string{"--rate", "0"}, want: 0},
		{name: "fraction", args: []string{"--rate", "0.5"}, want: 0.5},
		{name: "from the environment", env: "2.5", want: 2.5},
		{name: "negative", args: []string{"--rate", "-1"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "NaN", args: []string{"--rate", "NaN"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "Inf", args: []string{"--rate", "Inf"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "+Inf", args: []string{"--rate", "+Inf"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "-Inf", args: []string{"--rate", "-Inf"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "infinity", args: []string{"--rate", "infinity"}, wantErr: "--rate must be 0 (off) or a positive number"},
		{name: "NaN from the environment", env: "NaN", wantErr: "CHATTERPRO_RATE must be 0 (off) or a positive number"},
		{name: "Inf from the environment", env: "Inf", wantErr: "CHATTERPRO_RATE must be 0 (off) or a positive number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("CHATTERPRO_RATE", tt.env)
			}
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("rate %v, err %v; want one line containing %q", o.rate, err, tt.wantErr)
				}
				return
			}
			if err != nil || o.rate != tt.want {
				t.Fatalf("rate %v, err %v; want %v", o.rate, err, tt.want)
			}
		})
	}
}

// A CHATTERPRO_<NAME> variable sets its flag unless the command line gives
// it; an empty variable counts as unset; an error names where the bad value
// came from.
func TestEnvVariables(t *testing.T) {
	defaults, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    func(o *options) // changes from the defaults
		wantErr string
		notErr  string
	}{
		{
			name: "empty variables are unset",
			env: map[string]string{"CHATTERPRO_RATE": "", "CHATTERPRO_PRESENCE_TTL": "", "CHATTERPRO_GRACE": "",
				"CHATTERPRO_LOG_LEVEL": "", "CHATTERPRO_LAYER": "", "CHATTERPRO_ADDR": "", "CHATTERPRO_ROOMS": ""},
		},
		{
			name: "variables set flags",
			env:  map[string]string{"CHATTERPRO_RATE": "2.5", "CHATTERPRO_PRESENCE_TTL": "5s", "CHATTERPRO_ALLOWED_ORIGINS": "https://a.example"},
			want: func(o *options) { o.rate, o.presenceTTL, o.allowedOrigins = 2.5, 5*time.Second, "https://a.example" },
		},
		{
			name: "the command line wins",
			env:  map[string]string{"CHATTERPRO_RATE": "3", "CHATTERPRO_ADDR": "localhost:1"},
			args: []string{"--rate", "4", "--addr", "localhost:2"},
			want: func(o *options) { o.rate, o.addr = 4, "localhost:2" },
		},
		{
			name: "a variable the command line overrides is not parsed",
			env:  map[string]string{"CHATTERPRO_RATE": "abc", "CHATTERPRO_PRESENCE_TTL": "soon", "CHATTERPRO_LOG_LEVEL": "loud"},
			args: []string{"--rate", "5", "--presence-ttl", "1m", "--log-level", "debug"},
			want: func(o *options) { o.rate, o.presenceTTL, o.logLevel = 5, time.Minute, slog.LevelDebug },
		},
		{name: "unparsable variable", env: map[string]string{"CHATTERPRO_RATE": "abc"}, wantErr: `CHATTERPRO_RATE="abc"`},
		{name: "negative rate variable", env: map[string]string{"CHATTERPRO_RATE": "-2"}, wantErr: "CHATTERPRO_RATE must be", notErr: "--rate"},
		{name: "negative rate flag", env: map[string]string{"CHATTERPRO_RATE": "2"}, args: []string{"--rate", "-2"}, wantErr: "--rate must be", notErr: "CHATTERPRO_RATE"},
		{name: "zero presence TTL variable", env: map[string]string{"CHATTERPRO_PRESENCE_TTL": "0s"}, wantErr: "CHATTERPRO_PRESENCE_TTL must be positive", notErr: "--"},
		{name: "negative grace variable", env: map[string]string{"CHATTERPRO_GRACE": "-1s"}, wantErr: "CHATTERPRO_GRACE must be positive", notErr: "--"},
		{name: "zero grace flag", args: []string{"--grace", "0s"}, wantErr: "--grace must be positive"},
		{name: "history default", want: func(o *options) { o.history = 1000 }},
		{name: "history variable", env: map[string]string{"CHATTERPRO_HISTORY": "50"}, want: func(o *options) { o.history = 50 }},
		{name: "zero history flag", args: []string{"--history", "0"}, wantErr: "--history must be a positive number"},
		{name: "negative history variable", env: map[string]string{"CHATTERPRO_HISTORY": "-5"}, wantErr: "CHATTERPRO_HISTORY must be", notErr: "--"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || (tt.notErr != "" && strings.Contains(err.Error(), tt.notErr)) {
					t.Fatalf("err %v; want one naming %q (and not %q)", err, tt.wantErr, tt.notErr)
				}
				return
			}
			want := defaults
			if tt.want != nil {
				tt.want(&want)
			}
			if err != nil || o != want {
				t.Fatalf("parseFlags = %+v, %v; want %+v", o, err, want)
			}
		})
	}
}

// The abuse caps take 0 (off) or a positive number, from a flag or its
// variable; --trusted-proxies takes CIDRs or addresses.
func TestFlagCaps(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    func(o *options) // changes from the defaults
		wantErr string           // one line containing it
	}{
		{name: "defaults: 10 sockets per session, the rest off"},
		{name: "zero turns the session cap off", args: []string{"--max-session-conns", "0"}, want: func(o *options) { o.maxSessionConns = 0 }},
		{
			name: "flags",
			args: []string{"--max-session-conns", "3", "--max-addr-conns", "50", "--join-rate", "20", "--trusted-proxies", "10.0.0.0/8, 127.0.0.1"},
			want: func(o *options) {
				o.maxSessionConns, o.maxAddrConns, o.joinRate, o.trustedProxies = 3, 50, 20, "10.0.0.0/8, 127.0.0.1"
			},
		},
		{
			name: "variables",
			env: map[string]string{"CHATTERPRO_MAX_SESSION_CONNS": "0", "CHATTERPRO_MAX_ADDR_CONNS": "40",
				"CHATTERPRO_JOIN_RATE": "6", "CHATTERPRO_TRUSTED_PROXIES": "fd00::/8"},
			want: func(o *options) {
				o.maxSessionConns, o.maxAddrConns, o.joinRate, o.trustedProxies = 0, 40, 6, "fd00::/8"
			},
		},
		{name: "negative session cap", args: []string{"--max-session-conns", "-1"}, wantErr: "--max-session-conns must be 0 (off) or a positive number"},
		{name: "negative address cap variable", env: map[string]string{"CHATTERPRO_MAX_ADDR_CONNS": "-5"}, wantErr: "CHATTERPRO_MAX_ADDR_CONNS must be 0 (off) or a positive number"},
		{name: "negative join rate", args: []string{"--join-rate", "-2"}, wantErr: "--join-rate must be 0 (off) or a positive number"},
		{name: "fractional join rate", args: []string{"--join-rate", "1.5"}, wantErr: "join-rate"},
		{name: "unparsable variable", env: map[string]string{"CHATTERPRO_MAX_SESSION_CONNS": "ten"}, wantErr: `CHATTERPRO_MAX_SESSION_CONNS="ten"`},
		{name: "bad CIDR", args: []string{"--trusted-proxies", "10.0.0.0/8,10.0.0.0/40"}, wantErr: `--trusted-proxies: routing: trusted proxy "10.0.0.0/40" is not a CIDR`},
		{name: "host name variable", env: map[string]string{"CHATTERPRO_TRUSTED_PROXIES": "proxy.local"}, wantErr: `CHATTERPRO_TRUSTED_PROXIES: routing: trusted proxy "proxy.local"`},
	}
	defaults, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if defaults.maxSessionConns != 10 || defaults.maxAddrConns != 0 || defaults.joinRate != 0 || defaults.trustedProxies != "" {
		t.Fatalf("defaults %+v; want 10 sockets per session, the rest off", defaults)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err %v; want one line containing %q", err, tt.wantErr)
				}
				return
			}
			want := defaults
			if tt.want != nil {
				tt.want(&want)
			}
			if err != nil || o != want {
				t.Fatalf("parseFlags = %+v, %v; want %+v", o, err, want)
			}
		})
	}
}

// --room-ttl and --redis-replicas, from the command line or the
// environment, with their defaults and their limits.
func TestFlagsRoomTTLAndReplicas(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil || o.roomTTL != 168*time.Hour || o.redisReplicas != 0 {
		t.Fatalf("defaults: room TTL %v, replicas %d, err %v; want 168h and 0", o.roomTTL, o.redisReplicas, err)
	}
	o, err = parseFlags([]string{"--room-ttl", "2h", "--redis-replicas", "1"})
	if err != nil || o.roomTTL != 2*time.Hour || o.redisReplicas != 1 {
		t.Fatalf("flags: room TTL %v, replicas %d, err %v", o.roomTTL, o.redisReplicas, err)
	}
	t.Setenv("CHATTERPRO_ROOM_TTL", "30m")
	t.Setenv("CHATTERPRO_REDIS_REPLICAS", "2")
	o, err = parseFlags(nil)
	if err != nil || o.roomTTL != 30*time.Minute || o.redisReplicas != 2 {
		t.Fatalf("environment: room TTL %v, replicas %d, err %v", o.roomTTL, o.redisReplicas, err)
	}
	for _, tc := range []struct{ args []string }{{[]string{"--room-ttl", "0s"}}, {[]string{"--redis-replicas", "-1"}}} {
		if _, err := parseFlags(tc.args); err == nil {
			t.Errorf("%v: no error", tc.args)
		}
	}
}
