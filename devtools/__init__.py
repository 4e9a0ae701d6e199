"""Local development tools shared by `make demo` and the tests; never deployed, never imported
by the function (`.gcloudignore` leaves this folder out of the deployed source)."""
