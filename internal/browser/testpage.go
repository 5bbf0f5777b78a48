package browser

import (
	"context"
	"testing"
)

// OpenPage is how a test starts on a page: it starts a browser with o,
// opens url in it and returns the page with a context that ends after
// o.Timeout (default 60 s). The test fails when either step does; the
// context ends and the browser closes when the test does. Skipping a test
// on a machine without Chromium (Find) stays with the caller, before its
// own setup.
func OpenPage(t testing.TB, url string, o Options) (context.Context, *Page) {
	t.Helper()
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	t.Cleanup(cancel)
	b, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	p, err := b.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, p
}
