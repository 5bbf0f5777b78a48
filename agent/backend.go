package agent

import (
	"context"
	"crypto/ed25519"
	"slices"
	"sync"

	"github.com/rpi-cluster/rpi-cluster/agent/api"
	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
	"github.com/rpi-cluster/rpi-cluster/agent/cluster"
	"github.com/rpi-cluster/rpi-cluster/agent/detector"
	"github.com/rpi-cluster/rpi-cluster/agent/identity"
)

// backend serves the API from the agent's cluster view and metadata store.
type backend struct{ a *Agent }

var _ api.Backend = backend{}

func (b backend) Self() apitypes.Node { return toAPINode(b.a.cluster.Self()) }

func (b backend) Nodes() []apitypes.Node {
	members := b.a.cluster.Members()
	nodes := make([]apitypes.Node, len(members))
	for i, m := range members {
		nodes[i] = toAPINode(m)
	}
	return nodes
}

func (b backend) AddService(_ context.Context, service string) (bool, error) {
	return b.a.changeServices(service, b.a.store.Add)
}

func (b backend) RemoveService(_ context.Context, service string) (bool, error) {
	return b.a.changeServices(service, b.a.store.Remove)
}

// changeServices writes the metadata file first and gossips the new service
// list only once it is durable, so peers never see what a crash would lose.
func (a *Agent) changeServices(service string, change func(string) (bool, error)) (bool, error) {
	a.svcMu.Lock()
	defer a.svcMu.Unlock()
	changed, err := change(service)
	if err != nil || !changed {
		return changed, err
	}
	services := a.store.Services()
	a.cluster.UpdateSelf(func(r *cluster.Record) { r.Services = services })
	a.logger.Info("services changed", "services", services)
	return true, nil
}

func (b backend) Subscribe() (<-chan apitypes.Event, func()) {
	// The translator blocks on a slow reader, so events are only ever
	// dropped, and counted, by the cluster's subscription.
	in, cancel := b.a.cluster.Subscribe(64)
	out := make(chan apitypes.Event, 64)
	done := make(chan struct{})
	go func() {
		defer close(out)
		for ev := range in {
			select {
			case out <- toAPIEvent(ev):
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			close(done)
			cancel()
		})
	}
}

func (b backend) GossipStats() api.GossipStats {
	s := b.a.cluster.Stats()
	return api.GossipStats{
		MessagesSent:     s.MessagesSent,
		MessagesReceived: s.MessagesReceived,
		BytesSent:        s.BytesSent,
		BytesReceived:    s.BytesReceived,
		EventsDropped:    s.DroppedEvents,
		MessagesDropped:  s.HandoffDrops,

		VerdictsOverruled:     s.Overrules,
		ReadvertisementsAsked: s.Readvertisements,
		SilenceVerdicts:       s.SilenceVerdicts,
		WatcherVerdicts:       s.WatcherVerdicts,
		MembersReaped:         s.Reaped,
		Rejected:              s.Rejected,

		HealthScore:        s.Health.Score,
		LateRounds:         s.Health.LateRounds,
		VerdictsSuppressed: s.Health.Suppressed,
		SlipBuckets:        detector.SlipBuckets(),
		SlipCounts:         s.Health.SlipBuckets,
		SlipCount:          s.Health.SlipCount,
		SlipSum:            s.Health.SlipSum,
	}
}

// toAPINode turns the cluster's internal member into the API's model.
func toAPINode(m cluster.Member) apitypes.Node {
	mon := m.Monitoring
	return apitypes.Node{
		Name:       m.Name,
		Address:    m.Addr,
		GossipPort: m.GossipPort,
		HTTPPort:   m.HTTPPort,
		Status:     m.Status,
		Services:   nonNil(slices.Clone(m.Services)),
		Monitoring: apitypes.Monitoring{
			CPUs:            mon.CPUs,
			CPUPercent:      mon.CPUPercent,
			MemTotal:        mon.MemTotal,
			MemUsed:         mon.MemUsed,
			Load1:           mon.Load1,
			Load5:           mon.Load5,
			Load15:          mon.Load15,
			TempC:           mon.TempC,
			DiskUsedPercent: mon.DiskUsedPercent,
			UptimeS:         mon.UptimeS,
			SampledAt:       mon.SampledAt,
		},
		Phi:           m.Phi,
		PhiThreshold:  m.PhiThreshold,
		SSHHostKeys:   nonNil(slices.Clone(m.SSHHostKeys)),
		Version:       m.AgentVersion,
		Arch:          m.Arch,
		Model:         m.Model,
		RecordVersion: m.Version,
		Self:          m.Self,
		IdentityKey:   identityKey(m.IdentityKey),
		SignedRecord:  signedRecord(m),
	}
}

// identityKey is a node's public key as the API shows it; "" when no
// record carried one.
func identityKey(pub []byte) string {
	if len(pub) != ed25519.PublicKeySize {
		return ""
	}
	return identity.EncodePublicKey(pub)
}

// signedRecord is the node's record exactly as the node signed it.
func signedRecord(m cluster.Member) *apitypes.SignedRecord {
	body, sig, ok := m.SignedRecord()
	if !ok {
		return nil
	}
	return &apitypes.SignedRecord{Body: body, Sig: sig}
}

// nonNil makes empty lists encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
