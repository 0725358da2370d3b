"""The pages of the UI; each is a `render(client)` function."""
