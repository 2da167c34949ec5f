// Command poll runs live polls: everyone in /ws/poll/{poll}/ sees who is
// there (presence), votes with a reply that carries the new tally, sees
// every vote as it happens (recorded, so a reconnect with ?since= misses
// nothing) and can cheer the others (broadcast-from: not to oneself).
//
//	go run ./examples/poll                      # then open http://localhost:3000/
//	go run ./examples/poll -redis 127.0.0.1:6379 -addr localhost:3001
//
// Frames (the framework's JSON convention, docs/protocol.md):
//
//	→ {"type":"vote","ref":1,"option":"tabs"}   ← {"type":"reply","ref":1,"status":"ok","data":{"tally":{"tabs":1}}}
//	→ {"type":"cheer"}                          ← others get {"type":"cheer","user":"ada"}
//	← {"type":"vote","id":"…","user":"ada","option":"tabs"}  every vote, recorded
//	← {"type":"presence_diff",…}                who came and went
package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/client"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/presence"
	"github.com/chatterpro/chatterpro/routing"
)

var options = map[string]bool{"tabs": true, "spaces": true}

// pollConsumer serves one browser tab in one poll.
type pollConsumer struct {
	consumer.JSON
	poll, user string
	votes      map[string]string // user → option, from the poll's history and live votes
}

func (p *pollConsumer) Connect(ctx context.Context, c *consumer.Conn) error {
	p.poll, p.user, p.votes = "poll:"+c.Scope().Param("poll"), c.Scope().User.Name, map[string]string{}
	c.On("vote", p.onVote)
	c.On("cheer", forward)
	c.On(presence.DiffType, forward)
	c.HandleFrame("vote", p.vote)
	c.HandleFrame("cheer", p.cheer)
	if err := c.Track(ctx, p.poll, p.user, nil); err != nil {
		return err
	}
	// Joined since the last vote the tab saw: what it missed, no repeats.
	rec, err := c.GroupAddSince(ctx, p.poll, c.Scope().Query.Get("since"), 0)
	if err != nil {
		return err
	}
	all, err := c.Layer().(channellayer.History).Recent(ctx, p.poll, 1000)
	if err != nil {
		return err
	}
	for _, m := range all {
		p.count(m)
	}
	who, err := c.Presence(ctx, p.poll)
	if err != nil {
		return err
	}
	missed := make([]json.RawMessage, len(rec.Messages))
	for i, m := range rec.Messages {
		missed[i] = m.Body
	}
	return c.SendJSON(map[string]any{"type": "state", "tally": p.tally(), "online": who,
		"recovered": rec.Recovered, "missed": missed})
}

// vote records a vote; the reply carries the tally with it.
func (p *pollConsumer) vote(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
	var in struct{ Option string }
	if err := f.Decode(&in); err != nil {
		return nil, err
	}
	if !options[in.Option] {
		return nil, consumer.Reject(consumer.CodeInvalid, `vote for "tabs" or "spaces"`)
	}
	m, err := channellayer.NewMessage("vote", map[string]string{"user": p.user, "option": in.Option})
	if err != nil {
		return nil, err
	}
	if _, err := c.Layer().(channellayer.History).GroupSendRecorded(ctx, p.poll, m); err != nil {
		return nil, consumer.Reject(consumer.CodeUnavailable, "not recorded, try again")
	}
	p.votes[p.user] = in.Option
	return map[string]any{"tally": p.tally()}, nil
}

// cheer goes to everyone else in the poll.
func (p *pollConsumer) cheer(ctx context.Context, c *consumer.Conn, f consumer.Frame) (any, error) {
	m, _ := channellayer.NewMessage("cheer", map[string]string{"user": p.user})
	return nil, c.GroupSendOthers(ctx, p.poll, m)
}

func (p *pollConsumer) onVote(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
	p.count(m)
	return c.Send(m.Body)
}

func (p *pollConsumer) count(m channellayer.Message) {
	var v struct{ User, Option string }
	if m.Decode(&v) == nil && options[v.Option] {
		p.votes[v.User] = v.Option
	}
}

func (p *pollConsumer) tally() map[string]int {
	t := map[string]int{}
	for _, o := range p.votes {
		t[o]++
	}
	return t
}

func forward(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
	return c.Send(m.Body)
}

//go:embed index.html
var page embed.FS

func newApp(srv *consumer.Server, layer channellayer.Layer) (http.Handler, error) {
	router, err := routing.New(routing.Options{Server: srv, Identify: func(r *http.Request) (*consumer.User, error) {
		if name := r.URL.Query().Get("user"); name != "" { // a real app uses a session (package auth)
			return &consumer.User{Name: name, Session: name}, nil
		}
		return nil, errors.New("add ?user=NAME")
	}})
	if err != nil {
		return nil, err
	}
	router.Consumer("/ws/poll/{poll}/", func() consumer.Consumer { return &pollConsumer{} })
	router.Handle("GET /{$}", http.FileServerFS(page))
	router.Handle("GET /static/", client.Handler())
	return router, nil
}

func main() {
	addr := flag.String("addr", "localhost:3000", "listen address")
	redisAddr := flag.String("redis", "", "Redis address (host:port) to share polls with other nodes; empty: one process")
	flag.Parse()
	var layer channellayer.Layer
	var err error
	if *redisAddr != "" {
		layer, err = channellayer.NewRedis(context.Background(), redis.NewClient(&redis.Options{Addr: *redisAddr}), channellayer.RedisOptions{})
	} else {
		layer, err = channellayer.NewMemory(channellayer.MemoryOptions{})
	}
	if err != nil {
		log.Fatal(err)
	}
	srv, err := consumer.NewServer(consumer.Options{Layer: layer})
	if err != nil {
		log.Fatal(err)
	}
	app, err := newApp(srv, layer)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("poll: open http://%s/", *addr)
	log.Fatal(http.ListenAndServe(*addr, app))
}
