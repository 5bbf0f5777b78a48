package api

// Warnings about settings that leave the agent open, in the words /healthz,
// the page and the agent's log use: what is open, and what to set to close
// it.
const (
	warnOpenWrites = "API writes need no token: anyone who can reach this agent's HTTP port can add and remove its services. " +
		"Set api_token (--api-token, RPI_API_TOKEN) and give the tools the same token (--token or RPI_TOKEN)."
	warnPlainGossip = "gossip is not encrypted: any host on the LAN can read it and join the cluster. " +
		"Set encrypt (--encrypt, RPI_ENCRYPT) to a key from 'rpi-agent keygen', the same on every node."
)

// Warnings lists what is open to the LAN right now; empty when writes need
// a token and gossip is encrypted. It follows SetToken.
func (s *Server) Warnings() []string {
	w := []string{}
	if len(*s.token.Load()) == 0 {
		w = append(w, warnOpenWrites)
	}
	if s.plainGossip {
		w = append(w, warnPlainGossip)
	}
	return w
}
