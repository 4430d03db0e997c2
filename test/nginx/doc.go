// Package nginx holds the integration tests of the nginx bouncer: they run
// Debian's nginx with the shipped contrib/nginx snippets in front of a tiny
// upstream, the real nginx-bouncer binary on an embedded broker, and check
// every verdict through nginx. The wrk benchmark of bench/nginx.md lives
// here too (PORTCULLIS_NGINX_BENCH=1).
package nginx
