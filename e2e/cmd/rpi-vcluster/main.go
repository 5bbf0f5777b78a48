// Command rpi-vcluster runs the virtual Raspberry Pi cluster on Docker:
// `rpi-vcluster up -n 4` builds the node image (cached), starts the nodes
// and prints how to reach them; `rpi-vcluster down` removes what up made;
// `rpi-vcluster pi-base` builds the arm64 base image of the emulated boot.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/rpi-cluster/rpi-cluster/e2e/qemu"
	"github.com/rpi-cluster/rpi-cluster/e2e/vcluster"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "rpi-vcluster:", err)
		os.Exit(1)
	}
}

func app() *cli.App {
	runID := &cli.StringFlag{Name: "run-id", Value: "cluster", Usage: "name of the cluster; everything it makes is labelled " + vcluster.LabelRun + "=<run-id>"}
	repo := &cli.StringFlag{Name: "repo", Value: ".", Usage: "the rpi-cluster repository (its .cache/vcluster holds the cluster's SSH key and workstation files; base root filesystems are cached in $RPI_CACHE_DIR, else ~/.cache/rpi-cluster)"}
	mirror := &cli.StringFlag{Name: "mirror", EnvVars: []string{"RPI_VCLUSTER_MIRROR"}, Usage: "Debian mirror for debootstrap (default: this machine's apt mirror)"}
	return &cli.App{
		Name:  "rpi-vcluster",
		Usage: "a virtual Raspberry Pi cluster on Docker",
		Commands: []*cli.Command{
			{
				Name:  "up",
				Usage: "build the node image (cached) and start a cluster",
				Flags: []cli.Flag{
					&cli.IntFlag{Name: "nodes", Aliases: []string{"n"}, Value: 4, EnvVars: []string{"N"}, Usage: "number of nodes"},
					runID, repo, mirror,
					&cli.StringFlag{Name: "subnet", Value: vcluster.DefaultSubnet, Usage: "the private network's subnet"},
					&cli.DurationFlag{Name: "timeout", Value: 3 * time.Minute, Usage: "how long to wait for the agents to converge"},
				},
				Action: up,
			},
			{
				Name:  "down",
				Usage: "remove a cluster's containers, volumes and network",
				Flags: []cli.Flag{runID,
					&cli.StringFlag{Name: "session", Usage: "remove every run of this e2e session (label " + vcluster.LabelSession + ")"},
					&cli.BoolFlag{Name: "all", Usage: "remove every run's leftovers, anyone's (all objects labelled " + vcluster.LabelRun + ")"},
				},
				Action: func(c *cli.Context) error {
					switch {
					case c.Bool("all"):
						return vcluster.DownRun(c.Context, nil, "")
					case c.String("session") != "":
						return vcluster.DownSession(c.Context, nil, c.String("session"))
					}
					return vcluster.DownRun(c.Context, nil, c.String("run-id"))
				},
			},
			{
				Name:  "image",
				Usage: "build the node image (cached) and print its tag",
				Flags: []cli.Flag{repo, mirror},
				Action: func(c *cli.Context) error {
					root, err := vcluster.RepoRoot(c.String("repo"))
					if err != nil {
						return err
					}
					p, err := vcluster.Prepare(c.Context, vcluster.PrepareOptions{RepoRoot: root, Mirror: c.String("mirror"), Logger: logger()})
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, p.Image)
					return nil
				},
			},
			{
				Name:  "pi-base",
				Usage: "build the Raspberry-Pi-shaped arm64 base image for the emulated boot (cached) and print its path",
				Flags: []cli.Flag{mirror},
				Action: func(c *cli.Context) error {
					dir, err := vcluster.DefaultCacheDir()
					if err != nil {
						return err
					}
					p, err := qemu.EnsureBase(c.Context, qemu.BaseOptions{CacheDir: dir, Mirror: c.String("mirror"), Logger: logger()})
					if err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, p)
					return nil
				},
			},
		},
	}
}

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func up(c *cli.Context) error {
	root, err := vcluster.RepoRoot(c.String("repo"))
	if err != nil {
		return err
	}
	r, err := vcluster.Up(c.Context, vcluster.UpOptions{
		RepoRoot: root,
		Nodes:    c.Int("nodes"),
		RunID:    c.String("run-id"),
		Subnet:   c.String("subnet"),
		Mirror:   c.String("mirror"),
		Timeout:  c.Duration("timeout"),
		Logger:   logger(),
	})
	if err != nil {
		if r != nil && r.Cluster != nil {
			for _, n := range r.Cluster.Nodes() {
				if logs, lerr := r.Cluster.Logs(context.Background(), n, 15); lerr == nil {
					fmt.Fprintf(c.App.ErrWriter, "--- last lines of %s:\n%s\n", n.Container, logs)
				}
			}
			fmt.Fprintf(c.App.ErrWriter, "the cluster is left running for inspection; remove it with: rpi-vcluster down --run-id %s\n", r.Cluster.RunID)
		}
		return err
	}
	r.Report(c.App.Writer)
	return nil
}
