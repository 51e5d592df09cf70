//! Classification metrics: confusion matrix, precision, recall, F1.
