package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/chatterpro/chatterpro/auth"
	"github.com/chatterpro/chatterpro/static"
	"github.com/chatterpro/chatterpro/templates"
)

// maxFormBytes bounds the body of POST /join.
const maxFormBytes = 16 << 10

// contentSecurityPolicy allows nothing but the page's own origin: scripts,
// styles and the websocket ('self' covers same-origin ws: and wss:).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// pagesConfig configures the HTTP pages of the chat.
type pagesConfig struct {
	// Sessions issues and checks the session cookie. Required.
	Sessions *auth.Sessions
	// Rooms are offered on the join page; any valid room can be joined.
	// Defaults to "Chat Room", "Business Room", "Gaming Room".
	Rooms []string
	// AllowedOrigins ("scheme://host[:port]") may POST besides the page's
	// own origin. Defaults to none.
	AllowedOrigins []string
	// Limits rate-limits POST /join. Defaults to no limit.
	Limits limits
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// pages serves the join page, the chat page, POST /join, POST /leave and
// the static files. It is immutable after newPages and safe for
// concurrent use.
type pages struct {
	sessions *auth.Sessions
	rooms    []string
	log      *slog.Logger
	tmpl     *template.Template
	cop      *http.CrossOriginProtection
	limits   limits
	files    map[string]staticFile // by name in static.FS
}

type staticFile struct {
	data    []byte
	etag    string // quoted
	version string // for the ?v= cache buster
}

// newPages validates cfg, reads the static files and parses the templates.
func newPages(cfg pagesConfig) (*pages, error) {
	if cfg.Sessions == nil {
		return nil, errors.New("chat: new pages: Sessions is required")
	}
	p := &pages{
		sessions: cfg.Sessions,
		log:      cfg.Logger,
		cop:      http.NewCrossOriginProtection(),
		limits:   cfg.Limits,
		files:    make(map[string]staticFile),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	rooms := cfg.Rooms
	if len(rooms) == 0 {
		rooms = DefaultRooms()
	}
	for _, r := range rooms {
		room, err := ValidRoom(r)
		if err != nil {
			return nil, fmt.Errorf("chat: new pages: room %q: %w", r, err)
		}
		if !slices.Contains(p.rooms, room) {
			p.rooms = append(p.rooms, room)
		}
	}
	for _, o := range cfg.AllowedOrigins {
		// Lower case, as browsers send origins and as sameOrigin compares
		// them; the websocket's origin check ignores case too.
		o = strings.ToLower(strings.TrimSpace(o))
		if o == "" {
			continue
		}
		if err := p.cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("chat: new pages: allowed origin: %w", err)
		}
	}

	err := fs.WalkDir(static.FS, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(name) == ".go" {
			return err
		}
		data, err := fs.ReadFile(static.FS, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		v := hex.EncodeToString(sum[:8])
		p.files[name] = staticFile{data: data, etag: `"` + v + `"`, version: v}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("chat: new pages: static files: %w", err)
	}

	p.tmpl, err = template.New("").Funcs(template.FuncMap{"static": p.staticURL}).ParseFS(templates.FS, "*.html")
	if err != nil {
		return nil, fmt.Errorf("chat: new pages: templates: %w", err)
	}
	for _, name := range []string{"join.html", "chat.html", "error.html"} {
		if p.tmpl.Lookup(name) == nil {
			return nil, fmt.Errorf("chat: new pages: template %s missing", name)
		}
	}
	return p, nil
}

// register adds the pages' routes to mux.
func (p *pages) register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", p.secure(http.HandlerFunc(p.joinPage)))
	mux.Handle("POST /join", p.secure(p.sameOrigin(http.HandlerFunc(p.join))))
	mux.Handle("GET /chat/{room}", p.secure(http.HandlerFunc(p.chatPage)))
	mux.Handle("POST /leave", p.secure(p.sameOrigin(http.HandlerFunc(p.leave))))
	mux.Handle("GET /static/", p.secure(http.HandlerFunc(p.serveStatic)))
}

// secure sets the security headers of every page and file.
func (p *pages) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// sameOrigin refuses cross-origin requests as http.CrossOriginProtection
// does, but ignores the case of the Origin and Host, as the websocket's
// origin check does.
func (p *pages) sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := r.Clone(r.Context())
		c.Host = strings.ToLower(r.Host)
		if o := r.Header.Get("Origin"); o != "" {
			c.Header.Set("Origin", strings.ToLower(o))
		}
		if err := p.cop.Check(c); err != nil {
			p.renderError(w, http.StatusForbidden, "Forbidden", "This request came from another site and was refused.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

type roomOption struct {
	Name     string
	Selected bool
}

type joinData struct {
	Rooms     []roomOption
	Nickname  string
	RoomOther string
	Error     string
}

// joinForm builds the join page's data: room is selected if it is one of
// the offered rooms, else it goes into the "other room" field.
func (p *pages) joinForm(nickname, room, errText string) joinData {
	d := joinData{Nickname: nickname, Error: errText}
	offered := slices.Contains(p.rooms, room)
	if !offered {
		d.RoomOther = room
	}
	for _, r := range p.rooms {
		d.Rooms = append(d.Rooms, roomOption{Name: r, Selected: offered && r == room})
	}
	return d
}

// joinPage serves GET /. ?room= preselects a room (or fills in "other
// room"), so a link can invite someone into a room.
func (p *pages) joinPage(w http.ResponseWriter, r *http.Request) {
	room, _ := ValidRoom(r.URL.Query().Get("room"))
	p.render(w, http.StatusOK, "join.html", p.joinForm("", room, ""))
}

// join serves POST /join.
func (p *pages) join(w http.ResponseWriter, r *http.Request) {
	parseErr := parsePostForm(w, r)
	if ok, wait := p.limits.allowJoin(r); !ok {
		p.refuseJoin(w, r, wait)
		return
	}
	if err := parseErr; err != nil {
		msg := "The form could not be read. Please try again."
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, errFormFiles):
			msg = "The form takes a nickname and a room, no files."
		case errors.As(err, &tooBig):
			msg = "The form is too large: a nickname and a room are all it takes."
		}
		p.render(w, http.StatusBadRequest, "join.html", p.joinForm(r.PostForm.Get("nickname"), strings.TrimSpace(r.PostForm.Get("room")), msg))
		return
	}
	nickRaw := r.PostForm.Get("nickname")
	roomRaw := r.PostForm.Get("room")
	if other := r.PostForm.Get("room-other"); strings.TrimSpace(other) != "" {
		roomRaw = other
	}
	nickname, err := ValidNickname(nickRaw)
	if err == nil {
		var room string
		room, err = ValidRoom(roomRaw)
		if err == nil {
			if _, err := p.sessions.Login(w, r, nickname); err != nil {
				p.log.Error("chat: login", "err", err)
				p.renderError(w, http.StatusInternalServerError, "Something went wrong", "Could not start your session. Please try again.")
				return
			}
			redirect(w, "/chat/"+url.PathEscape(room))
			return
		}
	}
	p.render(w, http.StatusBadRequest, "join.html", p.joinForm(nickRaw, strings.TrimSpace(roomRaw), err.Error()))
}

// errFormFiles refuses a form with a file: no form here takes one.
var errFormFiles = errors.New("chat: the form takes no files")

// parsePostForm reads the body of a form POST into r.PostForm: URL-encoded
// (an HTML form) or multipart/form-data (curl -F, fetch with a FormData),
// at most maxFormBytes either way. A multipart form with a file is refused:
// no form here takes one. Only the body counts: fields in the query string
// are not in r.PostForm, whatever the encoding.
func parsePostForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		return r.ParseForm()
	}
	if err := r.ParseMultipartForm(maxFormBytes); err != nil {
		return err
	}
	defer r.MultipartForm.RemoveAll() // a file part may have gone to a temporary file
	if len(r.MultipartForm.File) > 0 {
		return errFormFiles
	}
	return nil
}

type chatData struct {
	Room     string
	Nickname string
}

// chatPage serves GET /chat/{room}.
func (p *pages) chatPage(w http.ResponseWriter, r *http.Request) {
	sess, err := p.sessions.FromRequest(r)
	if err != nil {
		redirect(w, "/")
		return
	}
	room, err := ValidRoom(r.PathValue("room"))
	if err != nil {
		p.renderError(w, http.StatusBadRequest, "No such room", "That is not a valid room name. "+err.Error())
		return
	}
	p.render(w, http.StatusOK, "chat.html", chatData{Room: room, Nickname: sess.Nickname})
}

// leave serves POST /leave.
func (p *pages) leave(w http.ResponseWriter, r *http.Request) {
	p.sessions.Logout(w, r)
	redirect(w, "/")
}

// redirect answers 303 See Other. Unlike http.Redirect it keeps the path as
// given (no cleaning), so an escaped room name survives unchanged.
func redirect(w http.ResponseWriter, location string) {
	w.Header().Set("Location", location)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusSeeOther)
}

type errorData struct {
	Title   string
	Message string
}

func (p *pages) renderError(w http.ResponseWriter, status int, title, msg string) {
	p.render(w, status, "error.html", errorData{Title: title, Message: msg})
}

// render executes a template into a buffer first, so a template error
// becomes a clean 500 instead of half a page.
func (p *pages) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := p.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		p.log.Error("chat: render page", "page", name, "err", err)
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// staticURL is the templates' "static" function: the versioned URL of a
// static file, so it can be cached for good.
func (p *pages) staticURL(name string) (string, error) {
	f, ok := p.files[name]
	if !ok {
		return "", fmt.Errorf("chat: no static file %q", name)
	}
	return "/static/" + name + "?v=" + f.version, nil
}

var contentTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

// serveStatic serves GET /static/{name}. A request carrying the file's
// current ?v= may be cached for a year; others are revalidated by ETag.
func (p *pages) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/static/")
	f, ok := p.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		h.Set("Content-Type", ct)
	}
	h.Set("ETag", f.etag)
	if r.URL.Query().Get("v") == f.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.data))
}
