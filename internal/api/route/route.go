// Package route is where each HTTP API of sluiced says what a request is:
// a table of routes, each a method and a path pattern, the handler, the
// permission it needs and the name metrics and access logs use. The server
// matches a request against the tables once; authorization, metrics and
// logging read the matched route from the request's context, and nothing
// else parses the path.
//
// Patterns are paths whose segments are literals, {param} (one segment),
// {param}:suffix (one segment ending in a literal suffix, as in
// {id}:cancel), or at most one {param...}, which takes one segment or more,
// none of them empty or starting with "_" (no repository name has such a
// component, and the APIs' own words do: _catalog, _tags). Repository names
// contain slashes, so a pattern with {name...} is matched from both ends:
// the literal segments after it are anchored to the end of the path, and
// the name is what lies between, once.
//
// An API names the parameter of its routes that is a repository
// (API.Repository); the table checks it when a route matches, once, so
// that the caller's permission is asked for a real name and the handler
// only ever sees one. An invalid name needs only credentials and is
// answered with the API's own error for oci.ErrNameInvalid.
package route

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/oci"
)

// Params are a request's path parameters, by the names the pattern gives
// them.
type Params map[string]string

// Handler serves a matched request. An error it returns is written by its
// API's error writer.
type Handler func(w http.ResponseWriter, r *http.Request, p Params) error

// Need says what a request needs of its caller, from its parameters (and,
// rarely, its query).
type Need func(r *http.Request, p Params) auth.Requirement

// Route is one endpoint.
type Route struct {
	Method  string
	Pattern string
	// Name labels the route in metrics and access logs.
	Name string
	// Need is the permission; nil means the route is public.
	Need   Need
	Handle Handler

	segs []segment
}

// API is one table: the routes under a path prefix, and how errors are
// written in its wire format.
type API struct {
	// Prefix is the path every route of the API starts with ("/v2").
	Prefix string
	Routes []Route
	// Error writes err in the API's format: a handler's error, or the
	// table's own ErrNotFound and *MethodError.
	Error func(w http.ResponseWriter, r *http.Request, err error)
	// NotFoundName labels requests that match no route, in metrics.
	NotFoundName string
	// Headers are set on every answer of the API.
	Headers map[string]string
	// Repository is the path parameter that names a repository in the
	// API's routes ("name" under /v2); "" when none does.
	Repository string
	// Sessions, when set, authenticates the API's callers from their
	// session (the portal's cookie) instead of the Authorization header,
	// and answers the requests they may not make in the API's own way.
	Sessions Sessions
}

// Sessions authenticate the callers of an API that signs its users in
// itself. The gate still decides, from the route's Need, what they may do.
type Sessions interface {
	// Caller returns the caller of the request's session, nil when it
	// has none.
	Caller(r *http.Request) (*auth.Caller, error)
	// Refuse answers a request its caller may not make: caller is nil
	// when the request has no session (or an invalid one, err).
	Refuse(w http.ResponseWriter, r *http.Request, caller *auth.Caller, err error)
}

// ErrNotFound is the error of a path no route of an API matches.
var ErrNotFound = errors.New("no such endpoint")

// MethodError is the error of a path some route matches, but not with
// the request's method.
type MethodError struct {
	Method string
	Allow  []string
}

func (e *MethodError) Error() string {
	return fmt.Sprintf("method %s is not allowed here; use %s", e.Method, strings.Join(e.Allow, " or "))
}

// segment is one element of a pattern.
type segment struct {
	literal string
	param   string // set for a parameter
	suffix  string // the literal end of a {param}:suffix segment
	rest    bool   // {param...}
}

func compile(pattern string) ([]segment, error) {
	var segs []segment
	rest := 0
	for _, s := range strings.Split(strings.TrimPrefix(pattern, "/"), "/") {
		if !strings.HasPrefix(s, "{") {
			segs = append(segs, segment{literal: s})
			continue
		}
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return nil, fmt.Errorf("route pattern %q: unclosed {", pattern)
		}
		seg := segment{param: s[1:end], suffix: s[end+1:]}
		if name, ok := strings.CutSuffix(seg.param, "..."); ok {
			seg.param, seg.rest = name, true
			rest++
			if seg.suffix != "" {
				return nil, fmt.Errorf("route pattern %q: {%s...} takes no suffix", pattern, name)
			}
		}
		segs = append(segs, seg)
	}
	if rest > 1 {
		return nil, fmt.Errorf("route pattern %q: at most one {param...}", pattern)
	}
	return segs, nil
}

// match matches path segments against the route's pattern.
func (rt *Route) match(path []string) (Params, bool) {
	restAt := slices.IndexFunc(rt.segs, func(s segment) bool { return s.rest })
	if restAt < 0 {
		if len(path) != len(rt.segs) {
			return nil, false
		}
		return matchAll(rt.segs, path, Params{})
	}
	after := len(rt.segs) - restAt - 1
	if len(path) < restAt+1+after {
		return nil, false
	}
	p, ok := matchAll(rt.segs[:restAt], path[:restAt], Params{})
	if !ok {
		return nil, false
	}
	if p, ok = matchAll(rt.segs[restAt+1:], path[len(path)-after:], p); !ok {
		return nil, false
	}
	taken := path[restAt : len(path)-after]
	if slices.ContainsFunc(taken, func(s string) bool { return s == "" || strings.HasPrefix(s, "_") }) {
		return nil, false
	}
	p[rt.segs[restAt].param] = strings.Join(taken, "/")
	return p, true
}

func matchAll(segs []segment, path []string, p Params) (Params, bool) {
	for i, s := range segs {
		v := path[i]
		switch {
		case s.param == "":
			if v != s.literal {
				return nil, false
			}
		case s.suffix != "":
			arg, ok := strings.CutSuffix(v, s.suffix)
			if !ok || arg == "" {
				return nil, false
			}
			p[s.param] = arg
		default:
			if v == "" {
				return nil, false
			}
			p[s.param] = v
		}
	}
	return p, true
}

// Compile checks every pattern of the API; it panics on a bad one, as a
// table is code.
func (a *API) Compile() *API {
	for i := range a.Routes {
		rt := &a.Routes[i]
		if !strings.HasPrefix(rt.Pattern, a.Prefix) {
			panic(fmt.Sprintf("route %s %s is not under %s", rt.Method, rt.Pattern, a.Prefix))
		}
		segs, err := compile(rt.Pattern)
		if err != nil {
			panic(err)
		}
		rt.segs = segs
	}
	return a
}

// Match finds the route of a request: the first in table order whose
// pattern and method match. Without one it returns ErrNotFound, or a
// *MethodError when the path matches routes of other methods.
func (a *API) Match(r *http.Request) (*Route, Params, error) {
	path := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var allow []string
	for i := range a.Routes {
		rt := &a.Routes[i]
		p, ok := rt.match(path)
		if !ok {
			continue
		}
		if rt.Method == r.Method || (rt.Method == http.MethodGet && r.Method == http.MethodHead) {
			return rt, p, nil
		}
		if !slices.Contains(allow, rt.Method) {
			allow = append(allow, rt.Method)
		}
	}
	if len(allow) > 0 {
		return nil, nil, &MethodError{Method: r.Method, Allow: allow}
	}
	return nil, nil, ErrNotFound
}

// Matched is what the server found for a request.
type Matched struct {
	API    *API
	Route  *Route // nil when no route matched
	Params Params
	// Err is ErrNotFound or *MethodError when Route is nil, and the
	// oci.ValidateName error of a matched route's repository parameter
	// that is not a repository name.
	Err error
}

// Name is the matched route's name for metrics and logs.
func (m *Matched) Name() string {
	switch {
	case m == nil:
		return "other"
	case m.Route != nil:
		return m.Route.Name
	case m.API.NotFoundName != "":
		return m.API.NotFoundName
	}
	return "other"
}

// Requirement is what the request needs of its caller: its route's Need,
// or nothing for a route without one (and for a request that matched no
// route, which is answered with an error before anything is read). An
// invalid repository name needs only credentials: nothing can be reached
// through it, and Serve answers NAME_INVALID.
func (m *Matched) Requirement(r *http.Request) auth.Requirement {
	switch {
	case m == nil || m.Route == nil || m.Route.Need == nil:
		return auth.Requirement{Public: true}
	case m.Err != nil:
		return auth.Requirement{Authenticated: true}
	}
	return m.Route.Need(r, m.Params)
}

type matchedKey struct{}

// With returns ctx carrying the match.
func With(ctx context.Context, m *Matched) context.Context {
	return context.WithValue(ctx, matchedKey{}, m)
}

// From returns the match of a request, nil outside the server's mux.
func From(ctx context.Context) *Matched {
	m, _ := ctx.Value(matchedKey{}).(*Matched)
	return m
}

// Mux serves a set of APIs: it matches each request once, sets its API's
// headers, and hands it to a chain (authorization, metrics, logs: each
// reads the match) that ends in Serve.
type Mux struct {
	apis    []*API
	handler http.Handler
}

// NewMux returns the mux of apis; chain wraps Serve (nil: Serve alone).
func NewMux(chain func(http.Handler) http.Handler, apis ...*API) *Mux {
	var h http.Handler = http.HandlerFunc(Serve)
	if chain != nil {
		h = chain(h)
	}
	return &Mux{apis: apis, handler: h}
}

// APIs are the mux's tables, for tests that walk every route.
func (m *Mux) APIs() []*API { return m.apis }

func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = Resolve(m.apis, r)
	if mt := From(r.Context()); mt != nil {
		for k, v := range mt.API.Headers {
			w.Header().Set(k, v)
		}
	}
	m.handler.ServeHTTP(w, r)
}

// Resolve matches r against the APIs whose prefix the path is under, in
// order, and returns r carrying the match: the first API with a route for
// the path, or else the first whose prefix it is under, with why none
// matched. A path under none carries nil.
func Resolve(apis []*API, r *http.Request) *http.Request {
	var first *Matched
	for _, a := range apis {
		if r.URL.Path != a.Prefix && !strings.HasPrefix(r.URL.Path, strings.TrimSuffix(a.Prefix, "/")+"/") {
			continue
		}
		m := &Matched{API: a}
		m.Route, m.Params, m.Err = a.Match(r)
		if m.Route != nil {
			m.Err = a.checkRepository(m.Params)
			return r.WithContext(With(r.Context(), m))
		}
		var me *MethodError
		if errors.As(m.Err, &me) {
			return r.WithContext(With(r.Context(), m))
		}
		if first == nil {
			first = m
		}
	}
	if first == nil {
		return r
	}
	return r.WithContext(With(r.Context(), first))
}

// checkRepository validates a matched route's repository parameter, if it
// has one.
func (a *API) checkRepository(p Params) error {
	name, ok := p[a.Repository]
	if a.Repository == "" || !ok {
		return nil
	}
	return oci.ValidateName(name)
}

// Serve runs the matched route's handler and writes its error, or writes
// why nothing matched or why the match cannot be served (an invalid
// repository name): the last handler of the server's chain.
func Serve(w http.ResponseWriter, r *http.Request) {
	m := From(r.Context())
	switch {
	case m == nil:
		http.NotFound(w, r)
	case m.Route == nil || m.Err != nil:
		m.API.Error(w, r, m.Err)
	default:
		if err := m.Route.Handle(w, r, m.Params); err != nil {
			m.API.Error(w, r, err)
		}
	}
}
