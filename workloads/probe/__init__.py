"""The probe workload: each URL of a unit fetched once, and what this vantage point saw of it
(status, DNS, connect, TLS and first-byte times, the certificate, a hash of the body). Its
job model replicates every URL to several peers in different networks (docs/workload-api.md)."""
