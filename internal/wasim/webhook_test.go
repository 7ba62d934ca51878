package wasim

import "testing"

// TestSign checks the webhook signature against HMAC-SHA256's published
// test vector.
func TestSign(t *testing.T) {
	got := Sign("key", []byte("The quick brown fox jumps over the lazy dog"))
	if want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}
