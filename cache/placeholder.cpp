// PLACEHOLDER so the library has a source until the cache lands; delete when adding real sources.
