// Package deploy holds the files an operator ships next to the chatterpro
// binary, embedded so that tests run exactly what is shipped.
//
// NginxConf returns deploy/nginx.conf: nginx as the load balancer in front of
// several ChatterPro nodes (websocket upgrade, long read timeout, passive
// health checks, no sticky sessions). internal/nginxtest starts a real nginx
// with it, changing only addresses and file paths.
package deploy

import _ "embed"

//go:embed nginx.conf
var nginxConf string

// NginxConf returns the shipped nginx configuration, deploy/nginx.conf.
func NginxConf() string { return nginxConf }
