package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Conflicts returns the node names the agent sees offered with another
// signing key than the one it pinned.
func (c *Client) Conflicts(ctx context.Context) ([]apitypes.KeyConflict, error) {
	var out []apitypes.KeyConflict
	err := c.do(ctx, http.MethodGet, "/v1/conflicts", nil, &out)
	return out, err
}

// Rekey asks the agent to pin name to the key it is being offered with:
// the step after the node's card was reinstalled. It needs the token; a
// *StatusError with Code 409 means the agent sees no other key for name.
func (c *Client) Rekey(ctx context.Context, name string) (apitypes.RekeyResult, error) {
	var res apitypes.RekeyResult
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/rekey", nil, &res)
	return res, err
}
