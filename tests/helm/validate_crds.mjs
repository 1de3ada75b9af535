// Validates KEDA ScaledObjects and Prometheus Operator ServiceMonitors with the @kubernetes-models schemas.
// Usage: node validate_crds.mjs <node_modules dir> < docs.json   (a JSON list of manifests)
// Prints a JSON list, one entry per manifest: null when valid, else the error message.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const load = async (path) => import(pathToFileURL(`${modules}/@kubernetes-models/${path}`).href);
const { ScaledObject } = await load("keda/keda.sh/v1alpha1/ScaledObject.mjs");
const { ServiceMonitor } = await load("prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js");
const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};

const docs = JSON.parse(readFileSync(0, "utf8"));
const results = docs.map((doc) => {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) return `no validator for ${doc.apiVersion}/${doc.kind}`;
  try {
    new Model(doc).validate();
    return null;
  } catch (err) {
    return String(err.message);
  }
});
process.stdout.write(JSON.stringify(results));
