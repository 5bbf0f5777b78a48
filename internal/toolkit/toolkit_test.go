package toolkit

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

func TestPermute(t *testing.T) {
	app := &cli.App{
		Flags: append(CommonFlags(), &cli.BoolFlag{Name: "dry-run"}, &cli.IntFlag{Name: "remove"}),
		Commands: []*cli.Command{{Name: "hosts", Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}},
		}}},
	}
	for _, tc := range []struct{ in, out, extra []string }{
		{[]string{"p", "2", "web", "--dry-run", "--agent", "a", "--", "-v", "--check"},
			[]string{"p", "--dry-run", "--agent", "a", "2", "web"}, []string{"-v", "--check"}},
		{[]string{"p", "hosts", "site.yml", "-o", "f", "--agent=x"},
			[]string{"p", "--agent=x", "hosts", "-o", "f", "site.yml"}, nil},
		{[]string{"p", "--remove", "1", "web"}, []string{"p", "--remove", "1", "web"}, nil},
	} {
		out, extra := Permute(app, tc.in)
		if !reflect.DeepEqual(out, tc.out) || !reflect.DeepEqual(extra, tc.extra) {
			t.Errorf("Permute(%q) = %q, %q; want %q, %q", tc.in, out, extra, tc.out, tc.extra)
		}
	}
}

func TestBusyScore(t *testing.T) {
	n := apitypes.Node{Monitoring: apitypes.Monitoring{CPUs: 2, Load1: 2, Load5: 1, Load15: 0.5, MemTotal: 4, MemUsed: 1}}
	// (3·0.25 + 2·0.5 + 1 + 4·0.25) / 4 = 0.9375
	if got := BusyScore(n); got != 0.9375 {
		t.Errorf("BusyScore = %v, want 0.9375", got)
	}
	if got := BusyScore(apitypes.Node{}); got != 0 {
		t.Errorf("empty sample = %v, want 0", got)
	}
	nodes := []apitypes.Node{{Name: "b"}, n, {Name: "a"}}
	SortByBusy(nodes)
	if nodes[0].Name != "a" || nodes[1].Name != "b" {
		t.Errorf("ties not broken by name: %v", nodes)
	}
}

func TestSplitList(t *testing.T) {
	if got := SplitList([]string{"a, b", "", "c"}); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("SplitList = %q", got)
	}
}

func TestGroupName(t *testing.T) {
	for in, want := range map[string]string{
		"nginx_webserver": "nginx_webserver",
		"web.api-v2":      "web_api_v2",
		"alive":           "service_alive",
		"all":             "service_all",
		"ungrouped":       "service_ungrouped",
		"failed":          "service_failed",
		"9p":              "service_9p",
	} {
		if got := GroupName(in); got != want {
			t.Errorf("GroupName(%q) = %q, want %q", in, got, want)
		}
	}
}
