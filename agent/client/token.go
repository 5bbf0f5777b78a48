package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// CheckToken proves that the agent accepts c's token for writes without
// changing anything: it sends PUT /v1/desired/{service} with an empty
// change, which the agent checks the token of first and then refuses as
// 400 (no count given). A 400 means the token passed; a 401 is returned as
// the agent's *StatusError. Tools call it before acting, so a wrong token
// stops them before a playbook installs what they then could not record.
func (c *Client) CheckToken(ctx context.Context, service string) error {
	_, err := c.fetch(ctx, http.MethodPut, "/v1/desired/"+url.PathEscape(service), "application/json", strings.NewReader("{}"))
	var se *StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusBadRequest:
		return nil
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		// An agent from before desired state: the token check of writes
		// is the same, so try a write that is refused after the check.
		return c.checkTokenOnServices(ctx)
	case err != nil:
		return err
	}
	return fmt.Errorf("check token: agent %s accepted an empty desired change; it is not an rpi-agent this tool knows", c.BaseURL)
}

// checkTokenOnServices sends PUT /v1/services/ (no name), which agents check
// the token of and refuse as 400.
func (c *Client) checkTokenOnServices(ctx context.Context) error {
	_, err := c.fetch(ctx, http.MethodPut, "/v1/services/", "application/json", nil)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusBadRequest {
		return nil
	}
	return err
}
