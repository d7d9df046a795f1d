// PLACEHOLDER so the library has a source until the I/O path lands; delete when adding real sources.
