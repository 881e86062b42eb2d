package auth

import "strings"

// DeniedError is a refusal: the caller is known but lacks the Missing
// accesses. Scope, when set, is what a bearer caller's client should ask
// its next token for (the request's whole scope); else Missing.
type DeniedError struct {
	Caller  *Caller
	Missing []Access
	Scope   []Access
}

func (e *DeniedError) Error() string { return Refusal(e.Caller, e.Missing) }

// ChallengeScope is the scope a challenge for this refusal names.
func (e *DeniedError) ChallengeScope() string {
	scope := e.Scope
	if len(scope) == 0 {
		scope = e.Missing
	}
	return ScopeString(scope)
}

// Shortfall is the part of need the caller is not granted: each access
// with only the actions missing, judged as Check judges a request.
func Shortfall(c *Caller, need []Access) []Access {
	var missing []Access
	for _, a := range need {
		lack := Access{Type: a.Type, Name: a.Name}
		for _, act := range a.Actions {
			one := Access{Type: a.Type, Name: a.Name, Actions: []string{act}}
			if !c.Check(Requirement{Accesses: []Access{one}}) {
				lack.Actions = append(lack.Actions, act)
			}
		}
		if len(lack.Actions) > 0 {
			missing = append(missing, lack)
		}
	}
	return missing
}

// deeds word each repository action for a refusal, with the scope map
// action that grants it.
var deeds = map[string]struct{ verb, grantedBy string }{
	ActionPull:           {"pull from", "content/read"},
	ActionPush:           {"push to", "content/write"},
	ActionDelete:         {"delete from", "content/delete"},
	ActionMetadataRead:   {"read the metadata of", "metadata/read"},
	ActionMetadataWrite:  {"change the metadata of", "metadata/write"},
	ActionStreamingWrite: {"push streaming artifacts to", "streaming/write"},
}

// Refusal says who may not do what and what would allow it, in the terms
// of scope maps: "token ci-bot may not push to team/app (it needs
// content/write)"; anonymous callers are told to log in.
func Refusal(c *Caller, missing []Access) string {
	who := callerName(c)
	var denied []string
	for _, a := range missing {
		for _, act := range a.Actions {
			d := deed(a, act)
			if who != anonymousCallers {
				d += " (" + remedy(a, act) + ")"
			}
			denied = append(denied, d)
		}
	}
	msg := who + " may not " + strings.Join(denied, ", nor ")
	if who == anonymousCallers {
		msg += "; log in first"
	}
	return msg
}

// deed words one action on a resource: "push to team/app".
func deed(a Access, action string) string {
	switch {
	case a.Type == TypeRegistry && a.Name == Admin:
		return "manage the registry"
	case a.Type == TypeRegistry && a.Name == Catalog:
		return "list the repositories"
	}
	if d, ok := deeds[action]; ok && a.Type == TypeRepository {
		return d.verb + " " + a.Name
	}
	return "use " + Access{Type: a.Type, Name: a.Name, Actions: []string{action}}.String()
}

// remedy says what grants one action: the scope map action, or the scope.
func remedy(a Access, action string) string {
	switch {
	case a.Type == TypeRegistry && a.Name == Admin:
		return "only the admin user may"
	case a.Type == TypeRepository && deeds[action].grantedBy != "":
		return "it needs " + deeds[action].grantedBy
	}
	return "it needs " + Access{Type: a.Type, Name: a.Name, Actions: []string{action}}.String()
}

const anonymousCallers = "anonymous callers"

// callerName names the identity behind a caller: "token ci-bot", "user
// admin" or "anonymous callers".
func callerName(c *Caller) string {
	kind, name := c.Identity.Kind, c.Identity.Name
	if c.Claims != nil {
		kind, name = c.Claims.IdentityKind, c.Claims.Subject
	}
	switch kind {
	case TokenUser:
		return "token " + name
	case AdminUser:
		return "user " + name
	}
	return anonymousCallers
}
