module aml-auth-proxy/benches/load/goproxy

go 1.19
