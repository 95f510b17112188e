"""The losses of one train step, by architecture (`cross_encoder`, `bi_encoder`), the retrieval
losses (`retrieval`) and the masked losses and alignment-loss registry they share (`losses`)."""
