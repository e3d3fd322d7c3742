// Audio worklet of dasr's page: posts each block of microphone samples (Float32, the context's rate)
// to the page, which converts them to 16-bit PCM and sends them over the WebSocket.
class PcmForwarder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("pcm-forwarder", PcmForwarder);
