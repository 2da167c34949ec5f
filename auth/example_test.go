package auth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/chatterpro/chatterpro/auth"
)

func Example() {
	sessions, err := auth.New(auth.Options{Secret: []byte("shared by every node, 16+ bytes")})
	if err != nil {
		panic(err)
	}

	// POST /join: log in and set the cookie.
	w := httptest.NewRecorder()
	if _, err := sessions.Login(w, httptest.NewRequest(http.MethodPost, "/join", nil), "Zoë"); err != nil {
		panic(err)
	}
	cookie := w.Result().Cookies()[0]

	// A later request, possibly on another node with the same secret.
	r := httptest.NewRequest(http.MethodGet, "/chat/Lobby", nil)
	r.AddCookie(cookie)
	sess, err := sessions.FromRequest(r)
	fmt.Println(cookie.Name, cookie.HttpOnly, sess.Nickname, err)

	// A request without the cookie.
	_, err = sessions.FromRequest(httptest.NewRequest(http.MethodGet, "/", nil))
	fmt.Println(err)
	// Output:
	// chatterpro_session true Zoë <nil>
	// auth: no session
}
