package command

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent"
)

// TestConfigEnvSeparate: a shell that exports RPI_CONFIG for the workstation
// tools, as the README once said, must not make rpi-agent read the tools'
// file (whose keys the agent rejects); RPI_AGENT_CONFIG is the agent's.
func TestConfigEnvSeparate(t *testing.T) {
	dir := t.TempDir()
	ws := filepath.Join(dir, "workstation.yaml")
	writeConfig(t, ws, "agents: [\"10.0.0.5:8080\"]\ntoken: s3cret\nssh_user: pi\n")
	own := filepath.Join(dir, "agent.yaml")
	writeConfig(t, own, "name: from-agent-config\nssh_host_keys: ''\n")

	load := func() (*agent.Config, error) {
		var conf *agent.Config
		app := App()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		app.Action = func(c *cli.Context) (err error) {
			conf, err = loadConfig(c)
			return err
		}
		err := app.Run([]string{"rpi-agent", "--data-dir", t.TempDir()})
		return conf, err
	}

	t.Setenv("RPI_CONFIG", ws)
	t.Setenv(envConfig, "")
	os.Unsetenv(envConfig)
	if _, err := load(); err != nil {
		t.Fatalf("RPI_CONFIG naming the workstation config broke the agent: %v", err)
	}
	t.Setenv(envConfig, own)
	conf, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if conf.Name != "from-agent-config" {
		t.Errorf("name %q: %s was not read", conf.Name, envConfig)
	}
}

// TestSecretFiles: the key and the token come from files given by flag,
// environment or config key; a file every user may read is refused.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	secret := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	keyFile := secret("key", key+"\n", 0o600)
	tokenFile := secret("token", "s3cret\n", 0o640)
	open := secret("open", "s3cret\n", 0o644)

	load := func(yaml string, args ...string) (*agent.Config, error) {
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		writeConfig(t, cfg, "ssh_host_keys: ''\n"+yaml)
		var conf *agent.Config
		app := App()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		app.Action = func(c *cli.Context) (err error) {
			conf, err = loadConfig(c)
			return err
		}
		err := app.Run(append([]string{"rpi-agent", "--config", cfg, "--data-dir", t.TempDir()}, args...))
		return conf, err
	}

	conf, err := load("", "--encrypt-file", keyFile, "--api-token-file", tokenFile)
	if err != nil || conf.Encrypt != key || conf.APIToken != "s3cret" {
		t.Fatalf("flags: %+v, %v", conf, err)
	}
	conf, err = load("encrypt_file: " + keyFile + "\napi_token_file: " + tokenFile + "\n")
	if err != nil || conf.Encrypt != key || conf.APIToken != "s3cret" {
		t.Fatalf("config keys: %+v, %v", conf, err)
	}
	t.Setenv("RPI_API_TOKEN_FILE", tokenFile)
	if conf, err = load("api_token: other\n"); err != nil || conf.APIToken != "s3cret" {
		t.Fatalf("RPI_API_TOKEN_FILE over the file's api_token: %+v, %v", conf, err)
	}
	os.Unsetenv("RPI_API_TOKEN_FILE")

	if _, err := load("", "--api-token-file", open); err == nil || !strings.Contains(err.Error(), "every user") || !strings.Contains(err.Error(), "chmod") {
		t.Errorf("a world-readable token file: %v; want a refusal saying chmod", err)
	}
	if _, err := load("api_token_file: " + open + "\n"); err == nil || !strings.Contains(err.Error(), open) {
		t.Errorf("a world-readable api_token_file: %v; want a refusal naming it", err)
	}
	if _, err := load("", "--api-token", "x", "--api-token-file", tokenFile); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--api-token with --api-token-file: %v; want a refusal", err)
	}
	if _, err := load("api_token: x\napi_token_file: " + tokenFile + "\n"); err == nil || !strings.Contains(err.Error(), "api_token and api_token_file") {
		t.Errorf("api_token with api_token_file: %v; want a refusal naming both", err)
	}
}

// TestSubcommandTokenFile: rekey and force-leave read --token-file and
// refuse one every user may read, before asking any agent.
func TestSubcommandTokenFile(t *testing.T) {
	open := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(open, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"rekey", "force-leave"} {
		app := App()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		err := app.Run([]string{"rpi-agent", sub, "--agent", "http://127.0.0.1:1", "--token-file", open, "pi-7"})
		if err == nil || !strings.Contains(err.Error(), "every user") || strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("%s with a world-readable --token-file: %v; want the refusal, before any agent is asked", sub, err)
		}
	}
}

// TestTokenOverrideNamesItsSource: when a flag or the environment gives the
// API token and the config file another, loadConfigLayers says which one
// wins; a file without a token, or with the same one, is no override.
func TestTokenOverrideNamesItsSource(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("from-token-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(yaml string, args ...string) *tokenOverride {
		t.Helper()
		cfg := filepath.Join(t.TempDir(), "agent.yaml")
		writeConfig(t, cfg, "ssh_host_keys: ''\n"+yaml)
		var override *tokenOverride
		app := App()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		app.Action = func(c *cli.Context) (err error) {
			_, override, err = loadConfigLayers(c)
			return err
		}
		if err := app.Run(append([]string{"rpi-agent", "--config", cfg, "--data-dir", t.TempDir()}, args...)); err != nil {
			t.Fatal(err)
		}
		return override
	}
	check := func(name string, got *tokenOverride, want *tokenOverride) {
		t.Helper()
		if (got == nil) != (want == nil) || got != nil && *got != *want {
			t.Errorf("%s: override %+v, want %+v", name, got, want)
		}
	}

	check("flag over the file's api_token", load("api_token: from-file\n", "--api-token", "from-flag"),
		&tokenOverride{source: "--api-token", file: "api_token"})
	check("flag over the file's api_token_file", load("api_token_file: "+tokenFile+"\n", "--api-token", "from-flag"),
		&tokenOverride{source: "--api-token", file: "api_token_file"})
	check("token file flag over the file's api_token", load("api_token: from-file\n", "--api-token-file", tokenFile),
		&tokenOverride{source: "--api-token-file", file: "api_token"})
	check("flag, file without a token", load("", "--api-token", "from-flag"), nil)
	check("flag, file with the same token", load("api_token: same\n", "--api-token", "same"), nil)
	check("file alone", load("api_token: from-file\n"), nil)

	t.Setenv("RPI_API_TOKEN", "from-env")
	check("environment over the file's api_token", load("api_token: from-file\n"),
		&tokenOverride{source: "RPI_API_TOKEN", file: "api_token"})
}
