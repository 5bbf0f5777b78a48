package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// ForceLeave asks the agent to remove a failed or left node from its view
// now and to ask its peers to do the same. It needs the token; a
// *StatusError with Code 404 means the agent does not list name, 409 that
// it holds it alive.
func (c *Client) ForceLeave(ctx context.Context, name string) (apitypes.ForceLeaveResult, error) {
	var res apitypes.ForceLeaveResult
	err := c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(name)+"/force-leave", nil, &res)
	return res, err
}
