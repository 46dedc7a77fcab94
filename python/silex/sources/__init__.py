"""Where objects come from: manifest files (:mod:`silex.sources.files`), later the cluster."""
