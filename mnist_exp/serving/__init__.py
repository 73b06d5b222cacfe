"""Using a trained model: predicting files and arrays, the draw-a-digit page and its API."""
