"""The one path of every remote call: response cache, quota throttle, retries and attempt records."""
