"""The core: what every learner shares and no algorithm family adds — limits on what files
may hold, seeding and device helpers, the logger, model-file serialization, flat parameter
vectors and the algorithm registry. It imports nothing from the layers above it."""
