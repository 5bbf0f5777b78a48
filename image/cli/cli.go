// Package cli is the rpi-image command line: build, rootfs and
// reset-identity. It writes to injectable writers so tests capture the
// output, and App is what the documentation generator reads.
package cli

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/agent/client"
	"github.com/rpi-cluster/rpi-cluster/image"
	"github.com/rpi-cluster/rpi-cluster/internal/cliapp"
	"github.com/rpi-cluster/rpi-cluster/internal/secretfile"
	"github.com/rpi-cluster/rpi-cluster/internal/toolkit"
)

// Run runs rpi-image with args (args[0] is the program name).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := App()
	a.Writer, a.ErrWriter = stdout, stderr
	// Flags may follow arguments: "rpi-image rootfs DIR --ssh-key KEY.pub".
	args, extra := toolkit.Permute(a, args)
	if len(extra) > 0 {
		return cliapp.Usagef("rpi-image takes no arguments after --: %v", extra)
	}
	return a.RunContext(ctx, args)
}

func customFlags(configOutDefault string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ssh-key", Usage: "SSH public key (`KEY.pub`) allowed to log in as --user"},
		&cli.StringFlag{Name: "user", Value: "pi", Usage: "login user, created when missing; its password is locked"},
		&cli.StringFlag{Name: "cluster", Value: "rpi", Usage: "cluster name the agents join"},
		&cli.StringFlag{Name: "encrypt", EnvVars: []string{"RPI_ENCRYPT"}, Usage: "gossip `KEY` (base64 of 16/24/32 bytes; visible to ps: prefer --encrypt-file); default: the cluster's kept key, else a new one"},
		&cli.StringFlag{Name: "encrypt-file", EnvVars: []string{"RPI_ENCRYPT_FILE"}, Usage: "read the gossip key from `FILE` (not readable by every user)"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"RPI_TOKEN"}, Usage: "API `TOKEN` (visible to ps: prefer --token-file); default: the cluster's kept token, else a new one"},
		&cli.StringFlag{Name: "token-file", EnvVars: []string{"RPI_TOKEN_FILE"}, Usage: "read the API token from `FILE` (not readable by every user)"},
		&cli.StringFlag{Name: "agent-dir", Value: "bin", Usage: "where `make cross` put the agent builds (DIR/linux-<arch>/rpi-agent)"},
		&cli.StringFlag{Name: "config-out", Value: configOutDefault, Usage: "workstation config to write (token, cluster, SSH user and key); the cluster's secrets are kept beside it in clusters/NAME.yaml"},
	}
}

func options(c *cli.Context) (image.Options, error) {
	o := image.Options{
		Cluster:  c.String("cluster"),
		User:     c.String("user"),
		AgentDir: c.String("agent-dir"),
	}
	var err error
	if o.Encrypt, err = secret(c, "encrypt"); err != nil {
		return o, err
	}
	if o.Token, err = secret(c, "token"); err != nil {
		return o, err
	}
	if p := c.String("ssh-key"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			return o, fmt.Errorf("ssh key: %w", err)
		}
		if o.AuthorizedKeys, err = image.ParseAuthorizedKeys(data, p); err != nil {
			return o, err
		}
	}
	return o, nil
}

// secret is the value of flag, else the content of its --FLAG-file twin.
func secret(c *cli.Context, flag string) (string, error) {
	return secretfile.Value("--"+flag, "--"+flag+"-file", c.String(flag), c.String(flag+"-file"))
}

func finish(c *cli.Context, r *image.Report, kept string) error {
	out := c.App.Writer
	image.PrintSummary(out, r)
	if kept != "" {
		fmt.Fprintf(out, "secrets:       reused the cluster's kept key and token from %s\n", kept)
	}
	path := c.String("config-out")
	if path == "" {
		fmt.Fprintln(out, "workstation:   not written (no --config-out)")
		return nil
	}
	notes, err := image.SaveWorkstation(path, r, c.String("ssh-key"))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "workstation:   %s (secrets kept in %s)\n", path, image.SecretsPath(path, r.Cluster))
	for _, n := range notes {
		fmt.Fprintln(out, "note:", n)
	}
	return nil
}

// App returns the rpi-image application.
func App() *cli.App {
	return cliapp.Prepare(&cli.App{
		Name:  "rpi-image",
		Usage: "prepare the SD-card image of an rpi-cluster (and the virtual cluster's node root filesystem)",
		Commands: []*cli.Command{
			{
				Name:      "build",
				Usage:     "customise a Raspberry Pi OS image into a cluster image (the base is never modified)",
				ArgsUsage: " ",
				Description: "Copies --base (.img or .img.xz) to --out and writes into it, without mounting: the agent for the\n" +
					"image's architecture, its config with the cluster's secrets, the login user with your SSH key and\n" +
					"a locked password, sshd with password login off, and a first-boot step giving each card its own\n" +
					"machine-id, SSH host keys and hostname. Needs debugfs (e2fsprogs) and mtools; xz for .xz bases.",
				Flags: append(customFlags(client.DefaultWorkstationConfigPath()),
					&cli.StringFlag{Name: "base", Usage: "Raspberry Pi OS image (required), , `raspios.img[.xz]`"},
					&cli.StringFlag{Name: "out", Usage: "image to write (required), , `cluster.img`"},
					&cli.StringFlag{Name: "wifi-ssid", Usage: "WiFi network to join"},
					&cli.StringFlag{Name: "wifi-psk", EnvVars: []string{"RPI_WIFI_PSK"}, Usage: "WiFi `PASSPHRASE` (visible to ps: prefer --wifi-psk-file)"},
					&cli.StringFlag{Name: "wifi-psk-file", EnvVars: []string{"RPI_WIFI_PSK_FILE"}, Usage: "read the WiFi passphrase from `FILE` (not readable by every user)"},
					&cli.StringFlag{Name: "country", Usage: "WiFi regulatory domain, e.g. GB (required with WiFi)"},
				),
				Action: func(c *cli.Context) error {
					if c.NArg() > 0 {
						return cliapp.Usagef("build takes no arguments (got %q): use --base and --out", c.Args().Slice())
					}
					if c.String("base") == "" || c.String("out") == "" {
						return cliapp.Usagef("build needs --base raspios.img[.xz] and --out cluster.img")
					}
					if c.String("ssh-key") == "" {
						return cliapp.Usagef("build: --ssh-key KEY.pub is required: the image has no password login")
					}
					psk, err := secret(c, "wifi-psk")
					if err != nil {
						return err
					}
					o, err := options(c)
					if err != nil {
						return err
					}
					if c.String("wifi-ssid") != "" || psk != "" || c.String("country") != "" {
						o.WiFi = &image.WiFi{SSID: c.String("wifi-ssid"), PSK: psk, Country: c.String("country")}
					}
					kept, err := image.FillSecrets(c.String("config-out"), &o)
					if err != nil {
						return err
					}
					res, err := image.Build(c.Context, image.BuildOptions{Options: o, Base: c.String("base"), Out: c.String("out"), Progress: c.App.ErrWriter})
					if err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "image:         %s (%s)\n", res.Out, humanSize(res.Size))
					if err := finish(c, res.Report, kept); err != nil {
						return err
					}
					image.PrintFlashHelp(c.App.Writer, res.Out)
					return nil
				},
			},
			{
				Name:      "rootfs",
				Usage:     "apply the same customisation to a root filesystem directory (the virtual cluster's node image)",
				ArgsUsage: "DIR",
				Description: "Writes into DIR exactly what build writes into an image's root partition. Owners are set when\n" +
					"running as root; otherwise they are listed in the manifest (--manifest) for whoever packs DIR.\n" +
					"In containers (no systemd) run /usr/local/sbin/rpi-firstboot before sshd and the agent.",
				Flags: append(customFlags(""),
					&cli.StringFlag{Name: "manifest", Usage: "write the owner and mode of every file written to `FILE` (default when not root: DIR.manifest)"},
				),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cliapp.Usagef("rootfs needs exactly one argument, the root filesystem directory")
					}
					o, err := options(c)
					if err != nil {
						return err
					}
					kept, err := image.FillSecrets(c.String("config-out"), &o)
					if err != nil {
						return err
					}
					dir := c.Args().First()
					fsys, err := image.OpenDir(dir)
					if err != nil {
						return err
					}
					defer fsys.Close()
					r, err := image.Customize(fsys, nil, o)
					if err != nil {
						return err
					}
					manifest := c.String("manifest")
					if manifest == "" && !fsys.Chown {
						manifest = dir + ".manifest"
					}
					if manifest != "" {
						if err := writeManifest(fsys, manifest); err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "manifest:      %s (owners and modes to apply when packing %s)\n", manifest, dir)
					}
					return finish(c, r, kept)
				},
			},
			{
				Name:      "reset-identity",
				Usage:     "make an image read back from a booted card clone into unique nodes again (modifies IMG in place)",
				ArgsUsage: "IMG",
				Description: "For an image copied off a card that has already booted (dd if=/dev/sdX of=IMG): empties\n" +
					"/etc/machine-id, removes the SSH host keys, resets the hostname to raspberrypi and removes the\n" +
					"first-boot marker, so every card written from IMG makes its own identity at its first boot.\n" +
					"IMG is changed IN PLACE; that is the point. IMG may also be a root filesystem directory.",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return cliapp.Usagef("reset-identity needs exactly one argument, the image file")
					}
					target := c.Args().First()
					var r *image.Report
					if info, err := os.Stat(target); err == nil && info.IsDir() {
						fsys, err := image.OpenDir(target)
						if err != nil {
							return err
						}
						defer fsys.Close()
						r = &image.Report{}
						if err := image.ResetIdentity(fsys, r); err != nil {
							return err
						}
					} else if r, err = image.ResetImage(target); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "identity reset in %s:\n", target)
					for _, p := range r.Written {
						fmt.Fprintf(c.App.Writer, "  %s\n", p)
					}
					for _, w := range r.Warnings {
						fmt.Fprintf(c.App.Writer, "warning: %s\n", w)
					}
					return nil
				},
			},
		},
	})
}

func writeManifest(fsys *image.DirFS, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := fsys.WriteManifest(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

func humanSize(n int64) string {
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}
