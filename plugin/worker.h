/* UniMed for Orthanc — the worker threads. */
#ifndef UNIMED_PLUGIN_WORKER_H
#define UNIMED_PLUGIN_WORKER_H

/* A worker thread's body; arg is its unimed_engine. */
void *worker_main(void *arg);

#endif
