package storetest

import (
	"time"

	"github.com/sluicehq/sluice/internal/metadata"
)

var keyCases = []testCase{
	{"signing keys are kept oldest first, the last added current", func(h *harness) {
		keys, err := h.s.SigningKeys(h.ctx)
		h.ok(err)
		if len(keys) != 0 {
			h.t.Fatalf("a new store has keys: %+v", keys)
		}
		h.ok(h.s.AddSigningKey(h.ctx, metadata.SigningKey{ID: "k1", PrivateKeyPEM: []byte("pem one\n")}))
		h.clock.Advance(time.Minute)
		h.ok(h.s.AddSigningKey(h.ctx, metadata.SigningKey{ID: "k2", PrivateKeyPEM: []byte("pem two\n"), Endorsement: "k1 says k2"}))
		keys, err = h.s.SigningKeys(h.ctx)
		h.ok(err)
		if len(keys) != 2 || keys[0].ID != "k1" || keys[1].ID != "k2" || keys[0].Current || !keys[1].Current ||
			string(keys[1].PrivateKeyPEM) != "pem two\n" || keys[1].Endorsement != "k1 says k2" {
			h.t.Fatalf("keys %+v, want k1 then k2, k2 current with its PEM and endorsement", keys)
		}
	}},
	{"adding a key again keeps it and makes it current", func(h *harness) {
		h.ok(h.s.AddSigningKey(h.ctx, metadata.SigningKey{ID: "k1", PrivateKeyPEM: []byte("pem one")}))
		h.ok(h.s.AddSigningKey(h.ctx, metadata.SigningKey{ID: "k2", PrivateKeyPEM: []byte("pem two")}))
		h.ok(h.s.AddSigningKey(h.ctx, metadata.SigningKey{ID: "k1", PrivateKeyPEM: []byte("another pem")}))
		keys, err := h.s.SigningKeys(h.ctx)
		h.ok(err)
		if len(keys) != 2 || !keys[0].Current || keys[1].Current || string(keys[0].PrivateKeyPEM) != "pem one" {
			h.t.Fatalf("keys %+v, want k1 current with its first PEM", keys)
		}
	}},
}
