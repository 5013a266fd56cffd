"""Browser tests of the web page and of grpc-web clients, in headless Chromium."""
