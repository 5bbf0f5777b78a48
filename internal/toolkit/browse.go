package toolkit

// Browse is the mDNS fallback used by Connect when neither --agent,
// RPI_AGENT nor the workstation config names an agent. It is nil (no mDNS
// fallback) until agent/discovery provides discovery.Browse; the glue then
// lives here and only here.
var Browse BrowseFunc
