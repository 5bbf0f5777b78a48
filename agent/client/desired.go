package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rpi-cluster/rpi-cluster/agent/apitypes"
)

// Desired returns the desired replica count of every service.
func (c *Client) Desired(ctx context.Context) ([]apitypes.DesiredService, error) {
	var st apitypes.DesiredState
	err := c.do(ctx, http.MethodGet, "/v1/desired", nil, &st)
	if err == nil && c.Gate != nil {
		st.Services = c.Gate.Desired(st.Services)
	}
	return st.Services, err
}

// DesiredFor returns one service's desired state; a *StatusError with Code
// 404 when nothing was ever asked of it.
func (c *Client) DesiredFor(ctx context.Context, service string) (apitypes.DesiredService, error) {
	var d apitypes.DesiredService
	err := c.do(ctx, http.MethodGet, "/v1/desired/"+url.PathEscape(service), nil, &d)
	return d, err
}

// SetDesired sets a service's desired replica count.
func (c *Client) SetDesired(ctx context.Context, service string, replicas int) (apitypes.DesiredService, error) {
	var d apitypes.DesiredService
	err := c.do(ctx, http.MethodPut, "/v1/desired/"+url.PathEscape(service), apitypes.DesiredChange{Replicas: &replicas}, &d)
	return d, err
}

// AddDesired adds delta (which may be negative) to a service's desired
// replica count; the result never goes below 0.
func (c *Client) AddDesired(ctx context.Context, service string, delta int) (apitypes.DesiredService, error) {
	var d apitypes.DesiredService
	err := c.do(ctx, http.MethodPut, "/v1/desired/"+url.PathEscape(service), apitypes.DesiredChange{Delta: &delta}, &d)
	return d, err
}

// ChangeDesired sends change as it is: a count or delta, a policy, rendered
// hashes, or several of them in one signed entry.
func (c *Client) ChangeDesired(ctx context.Context, service string, change apitypes.DesiredChange) (apitypes.DesiredService, error) {
	var d apitypes.DesiredService
	err := c.do(ctx, http.MethodPut, "/v1/desired/"+url.PathEscape(service), change, &d)
	return d, err
}
