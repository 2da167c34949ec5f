package testnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// Frame is one JSON frame of the chat websocket, server to client. Fields
// a frame type does not use stay zero.
type Frame struct {
	Type     string  `json:"type"`
	ID       string  `json:"id,omitempty"`
	User     string  `json:"user,omitempty"`
	Text     string  `json:"text,omitempty"`
	Time     string  `json:"time,omitempty"`
	Code     string  `json:"code,omitempty"`
	Room     string  `json:"room,omitempty"`
	Count    int     `json:"count,omitempty"`
	Users    []User  `json:"users,omitempty"`
	Messages []Frame `json:"messages,omitempty"`
	Reset    bool    `json:"reset,omitempty"`
	CID      string  `json:"cid,omitempty"`
	Bot      bool    `json:"bot,omitempty"`
	More     bool    `json:"more,omitempty"`
	// Raw is the frame as received.
	Raw json.RawMessage `json:"-"`
}

// User is an entry of a users frame.
type User struct {
	Name string `json:"name"`
}

// Names returns the names of a users frame.
func (f Frame) Names() []string {
	out := make([]string, len(f.Users))
	for i, u := range f.Users {
		out[i] = u.Name
	}
	return out
}

// HasUser reports whether a users frame lists name.
func (f Frame) HasUser(name string) bool {
	for _, u := range f.Users {
		if u.Name == name {
			return true
		}
	}
	return false
}

// String shows the frame as received.
func (f Frame) String() string { return string(f.Raw) }

// SessionCookie is the name of the chat's session cookie.
const SessionCookie = "chatterpro_session"

// StatusError is returned by the Dial methods when the server answered the
// websocket handshake with an HTTP status instead of switching protocols.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("testnode: websocket handshake refused: HTTP %d %s", e.Code, strings.TrimSpace(e.Body))
}

// HandshakeStatus returns the HTTP status of a refused handshake, or 0 if
// err is not a *StatusError.
func HandshakeStatus(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Client is one chat session (a cookie from POST /join) and at most one
// open websocket of it.
type Client struct {
	// BaseURL is the node the session joined on ("http://host:port").
	BaseURL string
	// Nickname and Room are what was joined.
	Nickname, Room string
	// Cookie is the session cookie. Nil sends none (for refusal tests).
	Cookie *http.Cookie
	// Header is sent with every websocket handshake (e.g. Origin).
	Header http.Header
	// Conn is the open websocket, nil before Dial. Do not Read from it
	// directly: the client reads in the background (see Next).
	Conn *websocket.Conn

	mu     sync.Mutex
	queue  []Frame // received, not yet returned by Next
	all    []Frame // everything received on every connection
	err    error   // why the current connection's reading ended
	notify chan struct{}
	done   chan struct{} // closed when the background reader ends
}

// Join posts the join form to baseURL and returns a client holding the
// session cookie, not yet connected: call Dial.
func Join(ctx context.Context, baseURL, nickname, room string) (*Client, error) {
	form := url.Values{"nickname": {nickname}, "room": {room}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/join", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c := &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true},
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("testnode: POST /join: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		return nil, fmt.Errorf("testnode: POST /join: HTTP %d, want 303", resp.StatusCode)
	}
	for _, ck := range resp.Cookies() {
		if ck.Name == SessionCookie {
			return &Client{BaseURL: baseURL, Nickname: nickname, Room: room, Cookie: ck, Header: http.Header{}}, nil
		}
	}
	return nil, fmt.Errorf("testnode: POST /join set no %s cookie", SessionCookie)
}

// Connect is Join followed by Dial(ctx, "").
func Connect(ctx context.Context, baseURL, nickname, room string) (*Client, error) {
	c, err := Join(ctx, baseURL, nickname, room)
	if err != nil {
		return nil, err
	}
	if err := c.Dial(ctx, ""); err != nil {
		return nil, err
	}
	return c, nil
}

// Tab returns another client of the same session and room (another browser
// tab), not yet connected.
func (c *Client) Tab() *Client {
	return &Client{BaseURL: c.BaseURL, Nickname: c.Nickname, Room: c.Room, Cookie: c.Cookie, Header: c.Header.Clone()}
}

// WebsocketURL returns the room's websocket URL on baseURL, with
// ?since= if since is not empty.
func WebsocketURL(baseURL, room, since string) string {
	u := "ws" + strings.TrimPrefix(baseURL, "http") + "/ws/chat/" + url.PathEscape(room) + "/"
	if since != "" {
		u += "?since=" + url.QueryEscape(since)
	}
	return u
}

// Dial opens the room's websocket on the node the session joined on.
func (c *Client) Dial(ctx context.Context, since string) error {
	return c.DialTo(ctx, c.BaseURL, since)
}

// DialTo opens the room's websocket on baseURL (any node sharing the
// secret), with ?since= if since is not empty. A connection still open is
// closed first with 1001 (going away).
func (c *Client) DialTo(ctx context.Context, baseURL, since string) error {
	return c.DialURL(ctx, WebsocketURL(baseURL, c.Room, since))
}

// DialURL opens a websocket at the raw URL u with the session cookie and
// Header. A refused handshake returns a *StatusError.
func (c *Client) DialURL(ctx context.Context, u string) error {
	if c.Conn != nil {
		c.Close(websocket.StatusGoingAway)
	}
	h := c.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if c.Cookie != nil {
		h.Add("Cookie", (&http.Cookie{Name: c.Cookie.Name, Value: c.Cookie.Value}).String())
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader: h,
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body string
			if resp.Body != nil {
				b := make([]byte, 512)
				k, _ := resp.Body.Read(b)
				body = string(b[:k])
				resp.Body.Close()
			}
			return &StatusError{Code: resp.StatusCode, Body: body}
		}
		return fmt.Errorf("testnode: dialing %s: %w", u, err)
	}
	conn.SetReadLimit(16 << 20)
	done := make(chan struct{})
	c.mu.Lock()
	c.Conn, c.queue, c.err, c.notify, c.done = conn, nil, nil, make(chan struct{}, 1), done
	c.mu.Unlock()
	go c.read(conn, done)
	return nil
}

// read owns the connection's reading until it fails or is closed.
func (c *Client) read(conn *websocket.Conn, done chan struct{}) {
	defer close(done)
	for {
		typ, data, err := conn.Read(context.Background())
		var f Frame
		if err == nil {
			if typ != websocket.MessageText {
				err = fmt.Errorf("testnode: got a binary frame %q", data)
			} else if jerr := json.Unmarshal(data, &f); jerr != nil {
				err = fmt.Errorf("testnode: undecodable frame %q: %w", data, jerr)
			}
			f.Raw = data
		}
		c.mu.Lock()
		if c.Conn != conn { // replaced by a newer connection
			c.mu.Unlock()
			if err == nil {
				continue
			}
			return
		}
		if err != nil {
			c.err = err
		} else {
			c.queue = append(c.queue, f)
			c.all = append(c.all, f)
		}
		select {
		case c.notify <- struct{}{}:
		default:
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Next returns the next frame of the current connection. When the
// connection has ended it returns why: websocket.CloseStatus(err) gives the
// close code. Giving up on ctx leaves the connection open.
func (c *Client) Next(ctx context.Context) (Frame, error) {
	for {
		c.mu.Lock()
		if c.notify == nil {
			c.mu.Unlock()
			return Frame{}, errors.New("testnode: not connected")
		}
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		err, notify := c.err, c.notify
		c.mu.Unlock()
		if err != nil {
			return Frame{}, err
		}
		select {
		case <-notify:
		case <-ctx.Done():
			return Frame{}, fmt.Errorf("testnode: waiting for a frame: %w", ctx.Err())
		}
	}
}

// Await returns the next frame of type typ for which match (nil: any)
// returns true, dropping the frames before it.
func (c *Client) Await(ctx context.Context, typ string, match func(Frame) bool) (Frame, error) {
	for {
		f, err := c.Next(ctx)
		if err != nil {
			return Frame{}, fmt.Errorf("awaiting a %q frame: %w", typ, err)
		}
		if f.Type == typ && (match == nil || match(f)) {
			return f, nil
		}
	}
}

// Received returns every frame received so far on every connection of the
// client, including those Next already returned.
func (c *Client) Received() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.all...)
}

// Pending returns the frames received but not yet returned by Next.
func (c *Client) Pending() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.queue...)
}

// Send sends a chat message frame.
func (c *Client) Send(ctx context.Context, text string) error {
	b, err := json.Marshal(struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}{"message", text})
	if err != nil {
		return err
	}
	return c.SendRaw(ctx, b)
}

// SendRaw sends data as one text frame.
func (c *Client) SendRaw(ctx context.Context, data []byte) error {
	if c.Conn == nil {
		return errors.New("testnode: not connected")
	}
	return c.Conn.Write(ctx, websocket.MessageText, data)
}

// Close closes the connection with code (1000 leaves the room at once)
// and waits for the background reader to end. It does nothing when not
// connected.
func (c *Client) Close(code websocket.StatusCode) {
	c.mu.Lock()
	conn, done := c.Conn, c.done
	c.Conn = nil
	c.mu.Unlock()
	if conn == nil {
		return
	}
	_ = conn.Close(code, "")
	<-done
}

// Done returns a channel closed when the current connection's background
// reader has ended (the connection is closed), nil before Dial.
func (c *Client) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// Leave closes the connection with 1000 and posts /leave, like the Leave
// button.
func (c *Client) Leave(ctx context.Context) error {
	c.Close(websocket.StatusNormalClosure)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/leave", nil)
	if err != nil {
		return err
	}
	if c.Cookie != nil {
		req.AddCookie(&http.Cookie{Name: c.Cookie.Name, Value: c.Cookie.Value})
	}
	resp, err := Do(req)
	if err != nil {
		return fmt.Errorf("testnode: POST /leave: %w", err)
	}
	if resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("testnode: POST /leave: HTTP %d, want 303", resp.StatusCode)
	}
	return nil
}
